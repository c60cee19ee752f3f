// The benchmark's second harness: the same Workers served by Miniflare's API straight from their
// wrangler.toml, without `wrangler dev` (no dev proxy Worker in a second workerd, no wrangler
// process carrying every request's logs). The client talks to workerd's own socket.

import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

import { Miniflare, convertV4MiniflareOptions } from 'miniflare';
import { unstable_getMiniflareWorkerOptions } from 'wrangler';

/**
 * Serves the Worker of `config` (a wrangler.toml) with `vars`, its state in `state`
 * (the layout `wrangler dev --persist-to state` uses, so migrations applied there count).
 */
export async function serveMiniflare(config, { vars = {}, state, port, inspectorPort }) {
  const { workerOptions: { modulesRules, ...workerOptions }, main } = unstable_getMiniflareWorkerOptions(config);
  const mf = new Miniflare(convertV4MiniflareOptions({
    workers: [{
      ...workerOptions,
      ...modulesOf(main),
      bindings: { ...workerOptions.bindings, ...vars },
    }],
    host: '127.0.0.1',
    port,
    inspectorPort,
    // The runtime's console lines still cross the pipe to this process, as under wrangler dev; they are dropped here.
    handleStructuredLogs() {},
    resourcePersistencePath: path.join(state, 'v3'),
  }));
  const url = (await mf.ready).toString().replace(/\/$/, '');
  const pid = claimWorkerd();
  return { url, stop: () => mf.dispose(), cpuMs: () => (pid ? cpuMsOf(pid) : undefined) };
}

const claimed = new Set();

/** The workerd process Miniflare just started for us (a child of this process not claimed before), on Linux. */
function claimWorkerd() {
  if (!existsSync('/proc/self/stat')) return undefined;
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    const stat = statOf(pid);
    if (stat && stat.comm === 'workerd' && stat.ppid === process.pid && !claimed.has(pid)) {
      claimed.add(pid);
      return pid;
    }
  }
  return undefined;
}

/** User and system CPU time a process has used, in ms (the kernel counts in ticks of 10 ms). */
function cpuMsOf(pid) {
  const stat = statOf(pid);
  return stat ? ((stat.utime + stat.stime) * 1000) / 100 : undefined;
}

function statOf(pid) {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { comm: text.slice(text.indexOf('(') + 1, text.lastIndexOf(')')), ppid: Number(fields[1]), utime: Number(fields[11]), stime: Number(fields[12]) };
  } catch {
    return undefined;
  }
}

/**
 * A Worker's modules, listed: Miniflare does not follow worker-build's `shim.mjs` (which only re-exports
 * `../index.js`), so a workers-rs Worker is its `index.js` and the wasm it imports.
 */
function modulesOf(main) {
  const build = path.dirname(main).replace(/\/worker$/, '');
  if (!existsSync(path.join(build, 'index_bg.wasm'))) return { modules: [{ type: 'ESModule', path: main }], modulesRoot: path.dirname(main) };
  const entry = main.endsWith(path.join('worker', 'shim.mjs')) ? [] : [{ type: 'ESModule', path: main }];
  return {
    modules: [
      ...entry,
      { type: 'ESModule', path: path.join(build, 'index.js') },
      { type: 'CompiledWasm', path: path.join(build, 'index_bg.wasm') },
    ],
    modulesRoot: build,
  };
}
