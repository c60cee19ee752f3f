// The credential lives in sessionStorage only (never localStorage, never a URL):
// it is gone when the tab closes, and on sign-out.

const KEY = 'tollgate.console.session';

/** {token, role: 'operator'|'key', label, permissions} or null. */
export function current() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY) ?? 'null');
  } catch {
    return null;
  }
}

export function save(session) {
  sessionStorage.setItem(KEY, JSON.stringify(session));
}

/** Signs out: the credential goes, and whatever else the console kept in this tab (a pending credit's key). */
export function clear() {
  for (const name of Object.keys(sessionStorage)) if (name.startsWith('tollgate.console.')) sessionStorage.removeItem(name);
}
