// Hash routes: #/page/id?params. They never carry the credential.

export function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, query = ''] = raw.split('?');
  const [page = '', id] = path.split('/').map(decodeURIComponent);
  return { page, id, params: new URLSearchParams(query) };
}

export function link(page, params) {
  const q = params ? new URLSearchParams(Object.entries(params).filter(([, v]) => v !== '' && v != null)).toString() : '';
  return `#/${page}${q ? `?${q}` : ''}`;
}

export function navigate(page, params) {
  location.hash = link(page, params);
}
