// The local runtime's floor: a one-line JavaScript pass-through Worker, served the same way as Tollgate.
export default { fetch: (req, env) => fetch(env.UPSTREAM + new URL(req.url).pathname.replace(/^\/v1/, ''), req) };
