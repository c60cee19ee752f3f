// The local runtime's floors, served the same way as Tollgate:
//   /v1/…      a one-line JavaScript pass-through
//   /do/v1/…   the same after one call to a trivial Durable Object (what one DO round trip costs)
import { DurableObject } from 'cloudflare:workers';

export class Counter extends DurableObject {
  async fetch() {
    return new Response('ok');
  }
}

export default {
  async fetch(req, env) {
    let path = new URL(req.url).pathname;
    if (path.startsWith('/do/')) {
      await env.COUNTER.get(env.COUNTER.idFromName('bench')).fetch('https://do/');
      path = path.slice(3);
    }
    return fetch(env.UPSTREAM + path.replace(/^\/v1/, ''), req);
  },
};
