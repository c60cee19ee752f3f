// The Worker's entry module (wrangler.toml `main`; `scripts/build` copies it next to worker-build's output).
//
// worker-build exports the default entrypoint and each Durable Object class wrapped in a panic-recovery
// `Proxy`: every request constructs the entrypoint and a Proxy around it, and every method read allocates
// another Proxy. This module exports the same handlers without it: the default export as a plain object
// (workerd constructs nothing per request) and each object class as a small wrapper. Recovery after a trap
// (a Rust panic, with panic = "abort") stays at one check per call, and stays the runtime's:
// - worker's panic hook sets `criticalError`, and wasm-bindgen's abort handler asks for a new instance,
//   which its glue makes before the next call into the module;
// - before each call, `recover` re-instantiates through worker-build's construct trap when `criticalError`
//   is set (what the Proxy did);
// - each instantiation runs worker's start function, which bumps `instanceId`, so an object whose Rust
//   side came from an earlier instance builds it anew before it is called.
// A new handler in lib.rs (a Rust `#[event]` or an object method) must be added here too.
// See docs/decisions.md ("The Worker's own entry module") and tests/panic.test.mjs.
import Gateway, { AccountDo as AccountDoProxy, OrgDo as OrgDoProxy } from './index.js';

/** worker's shared state: `criticalError` (a panic happened) and `instanceId` (bumped by each instantiation). */
const module = globalThis.__worker_init_state;

/** A trap, or wasm-bindgen's report of one (`Error('Critical error', { cause })`). */
function markIfTrap(error) {
  if (error instanceof WebAssembly.RuntimeError || error?.cause instanceof WebAssembly.RuntimeError) {
    module.criticalError = true;
  }
}

function rethrow(error) {
  markIfTrap(error);
  throw error;
}

/**
 * Re-instantiates the wasm module if a panic poisoned it, through worker-build's construct trap (which
 * re-instantiates first, then constructs). Should the construction itself throw, the trap marks the module
 * crashed again; it was re-instantiated all the same, so the mark is cleared rather than re-instantiating
 * on every call after.
 */
function recover(ctx, env) {
  if (!module.criticalError) return;
  try {
    Reflect.construct(Gateway, [ctx, env]);
  } catch (error) {
    module.criticalError = false;
    console.error('re-instantiated the module; constructing the entrypoint failed', error);
  }
}

/** Runs a call into the wasm; a trap, thrown now or rejected later, marks the module crashed. */
function guarded(call) {
  try {
    return call().catch(rethrow);
  } catch (error) {
    rethrow(error);
  }
}

// Rust futures are woken from microtasks; a trap there reaches no caller. worker-build listens for
// "error"; with the promise-based wake-ups below, such a trap surfaces as an unhandled rejection.
addEventListener('unhandledrejection', (event) => markIfTrap(event.reason));

// wasm-bindgen wakes Rust futures through the global `queueMicrotask` (its fallback, when there is none, is
// this same promise reaction). workerd's wraps every callback for its error reporting, which cost about
// 0.1–0.2 ms a request here (docs/performance.md); a reaction on a resolved promise is V8's own microtask,
// in the same queue and order. Nothing in this bundle calls it otherwise.
const resolved = Promise.resolve();
globalThis.queueMicrotask = (task) => {
  if (typeof task !== 'function') throw new TypeError('queueMicrotask: the argument must be a function');
  void resolved.then(task);
};

const { fetch, queue, scheduled, start } = Gateway.prototype;

// The generated methods read `this.env` and `this.ctx`, so each call gets them in a plain object.
export default {
  fetch(request, env, ctx) {
    recover(ctx, env);
    return guarded(() => fetch.call({ env, ctx }, request));
  },

  queue(batch, env, ctx) {
    recover(ctx, env);
    return guarded(() => queue.call({ env, ctx }, batch));
  },

  scheduled(event, env, ctx) {
    recover(ctx, env);
    return guarded(() => scheduled.call({ env, ctx }, event));
  },
};

/** An object class without the proxy: its Rust side is built anew after the module was re-instantiated. */
function durableObject(Proxied) {
  const Unwrapped = Proxied.prototype.constructor;
  return class {
    constructor(state, env) {
      this.args = [state, env];
      this.instanceId = -1;
    }

    /**
     * The Rust side, from the module's current instance. `start` (our start event, which does nothing) is
     * a call into the module, so a new instance the glue owes after a trap is made before the ids are
     * compared, never between the glue's stale-object check and the call.
     */
    current() {
      recover({}, this.args[1]);
      start();
      if (this.instanceId !== module.instanceId) {
        this.inner = Reflect.construct(Unwrapped, this.args);
        this.instanceId = module.instanceId;
      }
      return this.inner;
    }

    fetch(request) {
      return guarded(() => this.current().fetch(request));
    }

    alarm() {
      return guarded(() => this.current().alarm());
    }
  };
}

export const AccountDo = durableObject(AccountDoProxy);
export const OrgDo = durableObject(OrgDoProxy);
