// The Worker's entry module (wrangler.toml `main`; `scripts/build` copies it next to worker-build's output).
//
// worker-build exports the default entrypoint and each Durable Object class wrapped in a panic-recovery
// `Proxy`: every request constructs a Proxy around a new instance, and every method call allocates two more
// and goes through an extra async function. This module exports the same code unwrapped and keeps the
// same recovery at one check per call: a trap (a Rust panic, with panic = "abort") marks the instance
// crashed, and the next call re-instantiates the wasm module before it runs (worker-build's own construct
// trap does that, so the bookkeeping stays worker-build's), and each object builds its Rust side anew.
// See docs/decisions.md ("The Worker's own entry module") and tests/panic.test.mjs.
import Gateway, { AccountDo as AccountDoProxy, OrgDo as OrgDoProxy } from './index.js';

/** worker-build's shared state: `criticalError` (a trap happened) and `instanceId` (bumped by each re-instantiation). */
const module = globalThis.__worker_init_state;

function markIfTrap(error) {
  if (error instanceof WebAssembly.RuntimeError) module.criticalError = true;
}

function rethrow(error) {
  markIfTrap(error);
  throw error;
}

/** Re-instantiates the wasm module if a trap poisoned it, through worker-build's construct trap. */
function recover(env) {
  if (module.criticalError) Reflect.construct(Gateway, [{}, env]);
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

// wasm-bindgen wakes Rust futures through the global `queueMicrotask`. workerd's wraps each callback for
// its error reporting, which cost about 0.1–0.2 ms a request here (docs/performance.md); a reaction on a
// resolved promise is V8's own microtask. Nothing else in this isolate calls it.
const resolved = Promise.resolve();
globalThis.queueMicrotask = (task) => void resolved.then(task);

const { fetch, queue, scheduled } = Gateway.prototype;

// The object form of a default export: workerd constructs nothing per request. The generated methods read
// `this.env` and `this.ctx`, so each call gets them in a plain object.
export default {
  fetch(request, env, ctx) {
    recover(env);
    return guarded(() => fetch.call({ env, ctx }, request));
  },

  queue(batch, env, ctx) {
    recover(env);
    return guarded(() => queue.call({ env, ctx }, batch));
  },

  scheduled(event, env, ctx) {
    recover(env);
    return guarded(() => scheduled.call({ env, ctx }, event));
  },
};

/** A Durable Object class without the proxy: its Rust side is built anew after the module was re-instantiated. */
function durableObject(Proxied) {
  const Unwrapped = Proxied.prototype.constructor;
  return class {
    constructor(state, env) {
      this.args = [state, env];
      this.instanceId = -1;
    }

    current() {
      recover(this.args[1]);
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
