// The usage page's script: reads GET /v1/usage and GET /v1/blocks and draws
// the pools, the chosen pool's blocks and the chosen block's addresses.
//
// Every figure is written twice: as text for people and in data-*
// attributes (exact integers, percentages with two decimals) for tests and
// scripts. Strings from the API (pool and node names, handles, pod names)
// are user data: they reach the DOM only through text nodes and
// setAttribute, never as markup.
//
// The URL holds the selection (?pool=NAME&block=CIDR), so a view can be
// bookmarked or linked.
//
// Released addresses (IP cooldown: in use, held by nobody, until their
// cooldown has passed) have their own striped colour, apart from every
// node's, in the tiles, the legend and the address table.
'use strict';

// Distinct on a white page and for the commoner colour-vision deficiencies
// (after Okabe-Ito and Tableau 10); nodes beyond these get hues spread by
// the golden angle.
const PALETTE = [
  '#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#b07aa1',
  '#edc948', '#9c755f', '#ff9da7', '#0072b2', '#d55e00', '#009e73',
];
const NO_NODE_COLOR = '#9aa0a6';

const state = {
  usage: null,
  pool: null,
  block: null,
  colors: new Map(),
};

// ----- data ------------------------------------------------------------------

/** A failed API call, with what the server said. */
class ApiFailure extends Error {
  constructor(url, status, code, message) {
    super(message);
    this.url = url;
    this.status = status;
    this.code = code;
  }
}

// Pool sizes are u128 on the wire: an IPv6 /64 holds 2^64 addresses, past
// what a JS number holds exactly. Such integers are read as BigInt from
// their source text.
function parseJson(text) {
  return JSON.parse(text, (key, value, context) =>
    typeof value === 'number' && !Number.isSafeInteger(value) && context?.source
      && /^\d+$/.test(context.source)
      ? BigInt(context.source)
      : value);
}

async function getJson(url) {
  let response;
  try {
    response = await fetch(url, { headers: { Accept: 'application/json' }, cache: 'no-store' });
  } catch (error) {
    throw new ApiFailure(url, 0, 'unreachable', error.message);
  }
  const text = await response.text();
  if (!response.ok) {
    let body = {};
    try { body = JSON.parse(text); } catch { /* not JSON: a proxy's page */ }
    throw new ApiFailure(url, response.status, body.code ?? 'http_' + response.status,
      body.message ?? (text.trim().slice(0, 200) || response.statusText));
  }
  return parseJson(text);
}

const big = (n) => (typeof n === 'bigint' ? n : BigInt(n));

// Hundredths of a percent, rounded half up, as "12.50".
function percent(inUse, size) {
  const used = big(inUse);
  const total = big(size);
  if (total === 0n) return '0.00';
  const hundredths = (used * 10000n + total / 2n) / total;
  return `${hundredths / 100n}.${String(hundredths % 100n).padStart(2, '0')}`;
}

function percentText(inUse, size) {
  const p = percent(inUse, size);
  return p === '0.00' && big(inUse) > 0n ? '<0.01%' : p + '%';
}

const count = (n) => big(n).toLocaleString('en-US');

// Large powers of two (IPv6 ranges) read better as 2^n than as 20 digits.
function countNode(n) {
  const value = big(n);
  if (value >= 1n << 32n && (value & (value - 1n)) === 0n) {
    return h('span', { title: count(value) }, '2', h('sup', {}, String(value.toString(2).length - 1)));
  }
  return count(value);
}

const plural = (n, one, many) => `${count(n)} ${big(n) === 1n ? one : many}`;

function nodeColor(node) {
  return node ? state.colors.get(node) ?? NO_NODE_COLOR : NO_NODE_COLOR;
}

// One colour per node across every pool, assigned in name order so that a
// node keeps its colour from one pool to the next.
function assignColors(usage) {
  const nodes = new Set();
  for (const pool of usage.pools) for (const b of pool.blocks) if (b.node) nodes.add(b.node);
  for (const b of usage.orphanedBlocks) if (b.node) nodes.add(b.node);
  state.colors = new Map([...nodes].sort().map((node, i) => [node,
    i < PALETTE.length ? PALETTE[i] : `hsl(${(i * 137.508) % 360} 55% 48%)`]));
}

// ----- DOM -------------------------------------------------------------------

// Builds an element. Children that are not nodes become text nodes, so no
// string is ever parsed as HTML.
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'data') {
      for (const [k, v] of Object.entries(value)) el.dataset[k] = String(v);
    } else if (key === 'vars') {
      // CSSOM, not a style attribute: allowed by the page's CSP.
      for (const [k, v] of Object.entries(value)) el.style.setProperty(k, v);
    } else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) el.append(child);
  }
  return el;
}

const byId = (id) => document.getElementById(id);

function viewUrl(pool, block) {
  const params = new URLSearchParams();
  if (pool) params.set('pool', pool);
  if (block) params.set('block', block);
  const query = params.toString();
  return query ? '?' + query : location.pathname;
}

// A link that changes the view in place (and still works opened in a new tab).
function viewLink(pool, block, props, ...children) {
  return h('a', {
    ...props,
    href: viewUrl(pool, block),
    onclick: (event) => {
      if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
      event.preventDefault();
      navigate(pool, block);
    },
  }, ...children);
}

function bar(inUse, size) {
  // Amber from 75 %, red from 90 %: where an operator should add a pool.
  const level = big(inUse) * 100n >= big(size) * 90n ? ' full'
    : big(inUse) * 100n >= big(size) * 75n ? ' busy' : '';
  return h('span', { class: 'bar' + level, role: 'img', 'aria-label': percentText(inUse, size) + ' in use',
    vars: { '--fill': percent(inUse, size) + '%' } }, h('span', { class: 'bar-fill' }));
}

// A handle (`k8s-pod-network.<container id>`) as text that may wrap after
// its dots and dashes rather than anywhere.
function breakable(text) {
  return text.split(/(?<=[.-])/).flatMap((part, i) => (i === 0 ? [part] : [h('wbr'), part]));
}

function empty(id, ...text) {
  return h('p', { class: 'empty', id }, ...text);
}

// ----- rendering -----------------------------------------------------------------

function renderPools() {
  const { pools } = state.usage;
  const body = byId('pools-body');
  if (pools.length === 0) {
    body.replaceChildren(empty('no-pools', 'No IP pools yet. Create one with ',
      h('code', {}, 'POST /v1/pools'), ' (see ', h('a', { href: '/openapi.json' }, '/openapi.json'),
      '), or start the server with ', h('code', {}, 'CALICO_IPV4POOL_CIDR'), ' set.'));
    return;
  }
  const rows = pools.map((pool) => {
    const chosen = pool.name === state.pool;
    return h('tr', {
      class: chosen ? 'pool-row chosen' : 'pool-row',
      'aria-selected': chosen ? 'true' : 'false',
      data: {
        pool: pool.name, cidr: pool.cidr, blockSize: pool.blockSize, disabled: pool.disabled,
        loadBalancer: pool.loadBalancer ?? false,
        size: big(pool.size), inUse: big(pool.inUse), free: big(pool.free),
        percent: percent(pool.inUse, pool.size), blocks: pool.blocks.length,
        released: big(pool.released ?? 0),
      },
      onclick: (event) => { if (!event.target.closest('a')) navigate(pool.name, null); },
    },
    h('td', {}, viewLink(pool.name, null, { class: 'pool-name' }, pool.name),
      pool.disabled ? h('span', { class: 'tag' }, 'disabled') : null,
      pool.loadBalancer ? h('span', { class: 'tag' }, 'LoadBalancer') : null),
    h('td', { class: 'mono' }, pool.cidr),
    h('td', { class: 'num' }, '/' + pool.blockSize),
    h('td', { class: 'num' }, count(pool.blocks.length)),
    h('td', { class: 'num' }, countNode(pool.size)),
    h('td', { class: 'num' }, count(pool.inUse),
      pool.released ? h('span', { class: 'tag released', title: 'released, in their IP cooldown' },
        `${count(pool.released)} released`) : null),
    h('td', { class: 'num' }, countNode(pool.free)),
    h('td', {}, h('div', { class: 'util' }, bar(pool.inUse, pool.size),
      h('span', { class: 'pct' }, percentText(pool.inUse, pool.size)))));
  });
  body.replaceChildren(h('table', { class: 'pools' },
    h('thead', {}, h('tr', {}, ['Pool', 'CIDR', 'Block size', 'Blocks', 'Addresses', 'In use', 'Free',
      'Utilization'].map((t, i) => h('th', { class: i >= 2 && i <= 6 ? 'num' : null, scope: 'col' }, t)))),
    h('tbody', {}, rows)));
}

function blockTile(block, poolName) {
  const pct = percent(block.inUse, block.size);
  const released = block.released ?? 0;
  const tooltip = [
    block.cidr,
    block.node ? `node ${block.node}` : 'no node affinity',
    `${count(block.inUse)} of ${count(block.size)} in use (${percentText(block.inUse, block.size)}), ${count(block.free)} free`,
    block.borrowed ? `${plural(block.borrowed, 'address', 'addresses')} used by other nodes (borrowed)` : null,
    released ? `${plural(released, 'address', 'addresses')} released, out of use until the IP cooldown has passed` : null,
  ].filter(Boolean).join('\n');
  const chosen = block.cidr === state.block;
  return viewLink(poolName, block.cidr, {
    class: 'block' + (chosen ? ' chosen' : '') + (block.node ? '' : ' unowned'),
    title: tooltip,
    'aria-label': tooltip.replaceAll('\n', ', '),
    'aria-current': chosen ? 'true' : null,
    data: {
      cidr: block.cidr, node: block.node ?? '', size: block.size, inUse: block.inUse,
      free: block.free, borrowed: block.borrowed, percent: pct, released,
    },
    vars: { '--node': nodeColor(block.node), '--fill': pct + '%',
      '--released-fill': percent(released, block.size) + '%' },
  },
  h('span', { class: 'block-fill' }),
  released ? h('span', { class: 'block-released' }) : null,
  h('span', { class: 'block-cidr' }, block.cidr),
  h('span', { class: 'block-count' }, `${count(block.inUse)}/${count(block.size)}`),
  block.borrowed ? h('span', { class: 'block-borrowed', 'aria-hidden': 'true' }, `↪${block.borrowed}`) : null);
}

function renderLegend(blocks) {
  const perNode = new Map();
  for (const b of blocks) {
    const key = b.node ?? '';
    const entry = perNode.get(key) ?? { blocks: 0, inUse: 0 };
    entry.blocks += 1;
    entry.inUse += b.inUse;
    perNode.set(key, entry);
  }
  const keys = [...perNode.keys()].sort((a, b) => (a === '') - (b === '') || a.localeCompare(b));
  byId('legend').replaceChildren(...keys.map((node) => {
    const { blocks: n, inUse } = perNode.get(node);
    return h('li', { data: { node, color: nodeColor(node || null), blocks: n, inUse } },
      h('span', { class: 'swatch', vars: { '--node': nodeColor(node || null) } }),
      h('span', { class: node ? 'legend-node' : 'legend-node muted' }, node || 'no affinity'),
      h('span', { class: 'muted' }, ` ${plural(n, 'block', 'blocks')}, ${count(inUse)} in use`));
  }), ...releasedLegend(blocks));
}

// The released colour's own legend entry, when the blocks hold any.
function releasedLegend(blocks) {
  const released = blocks.reduce((sum, b) => sum + (b.released ?? 0), 0);
  if (!released) return [];
  return [h('li', { class: 'legend-released', data: { released } },
    h('span', { class: 'swatch released' }),
    h('span', { class: 'legend-node' }, 'released'),
    h('span', { class: 'muted' }, ` ${count(released)} in IP cooldown, held by nobody`))];
}

function renderPoolDetail() {
  const section = byId('pool-detail');
  const pool = state.usage.pools.find((p) => p.name === state.pool);
  if (!pool) {
    section.hidden = true;
    return;
  }
  section.hidden = false;
  const prefix = Number(pool.cidr.split('/')[1]);
  const possible = pool.blockSize >= prefix ? 1n << BigInt(pool.blockSize - prefix) : 0n;
  const nodes = new Set(pool.blocks.map((b) => b.node).filter(Boolean));
  const borrowed = pool.blocks.reduce((sum, b) => sum + b.borrowed, 0);
  const released = pool.blocks.reduce((sum, b) => sum + (b.released ?? 0), 0);
  section.dataset.pool = pool.name;
  section.dataset.released = released;
  section.dataset.blocks = pool.blocks.length;
  section.dataset.possibleBlocks = possible;
  section.dataset.nodes = nodes.size;
  section.dataset.borrowed = borrowed;
  byId('pool-title').replaceChildren('Blocks of ', h('span', { class: 'mono' }, pool.name),
    ' ', h('span', { class: 'muted mono' }, pool.cidr));
  byId('pool-summary').replaceChildren(
    `${plural(pool.blocks.length, 'block', 'blocks')} of `, countNode(possible),
    ` possible (/${pool.blockSize} in ${pool.cidr}) · ${plural(nodes.size, 'node', 'nodes')}`
    + (borrowed ? ` · ${plural(borrowed, 'borrowed address', 'borrowed addresses')}` : '')
    + (released ? ` · ${plural(released, 'released address', 'released addresses')} in cooldown` : ''));
  renderLegend(pool.blocks);
  byId('grid').replaceChildren(pool.blocks.length === 0
    ? empty('no-blocks', 'No blocks yet: a node claims its first block of this pool when it assigns an address from it.')
    : h('div', { class: 'tiles' }, pool.blocks.map((b) => blockTile(b, pool.name))));
}

function renderOrphans() {
  const blocks = state.usage.orphanedBlocks;
  byId('orphans').hidden = blocks.length === 0;
  byId('orphan-grid').replaceChildren(h('div', { class: 'tiles' }, blocks.map((b) => blockTile(b, null))));
}

function findBlock(cidr) {
  for (const pool of state.usage.pools) {
    const block = pool.blocks.find((b) => b.cidr === cidr);
    if (block) return { pool: pool.name, block };
  }
  const orphan = state.usage.orphanedBlocks.find((b) => b.cidr === cidr);
  return orphan ? { pool: null, block: orphan } : null;
}

async function renderBlockDetail() {
  const section = byId('block-detail');
  if (!state.block) {
    section.hidden = true;
    return;
  }
  let detail;
  try {
    detail = await getJson('/v1/blocks?' + new URLSearchParams({ cidr: state.block }));
  } catch (error) {
    section.hidden = true;
    throw error;
  }
  const usage = findBlock(detail.cidr)?.block;
  section.hidden = false;
  section.dataset.cidr = detail.cidr;
  section.dataset.node = detail.node ?? '';
  section.dataset.allocations = detail.allocations.length;
  byId('block-title').replaceChildren('Block ', h('span', { class: 'mono' }, detail.cidr),
    h('button', { type: 'button', class: 'close', 'aria-label': 'Close block',
      onclick: () => navigate(state.pool, null) }, '×'));
  const borrowedRows = detail.allocations.filter((a) => a.attributes.node && a.attributes.node !== detail.node);
  const releasedRows = detail.allocations.filter((a) => a.releasedAt);
  byId('block-summary').replaceChildren(
    h('span', { class: 'swatch', vars: { '--node': nodeColor(detail.node) } }),
    detail.node ? `node ${detail.node}` : 'no node affinity',
    usage ? ` · ${count(usage.inUse)} of ${count(usage.size)} in use (${percentText(usage.inUse, usage.size)})`
      : ` · ${plural(detail.allocations.length, 'address', 'addresses')} in use`,
    borrowedRows.length ? ` · ${count(borrowedRows.length)} borrowed by other nodes` : '',
    releasedRows.length ? ` · ${count(releasedRows.length)} released, in IP cooldown` : '');
  const body = byId('block-body');
  if (detail.allocations.length === 0) {
    body.replaceChildren(empty('no-addresses', 'No address of this block is in use.'));
    return;
  }
  const known = new Set(['pod', 'namespace', 'node']);
  const others = (a) => Object.entries(a.attributes).filter(([k]) => !known.has(k)).map(([k, v]) => `${k}=${v}`);
  // Attributes beyond pod, namespace and node (a timestamp, a VM name) get
  // a column only when some address has them.
  const withOther = detail.allocations.some((a) => others(a).length > 0);
  const columns = ['Address', 'Ordinal', 'Handle', 'Pod', 'Namespace', 'Node'].concat(withOther ? ['Other'] : []);
  body.replaceChildren(h('table', { class: 'addresses' },
    h('thead', {}, h('tr', {}, columns
      .map((t) => h('th', { scope: 'col', class: t === 'Ordinal' ? 'num' : null }, t)))),
    h('tbody', {}, detail.allocations.map((a) => {
      const attrs = a.attributes;
      const borrowed = Boolean(attrs.node && attrs.node !== detail.node);
      const released = Boolean(a.releasedAt);
      return h('tr', {
        class: 'address' + (borrowed ? ' borrowed' : '') + (released ? ' released' : ''),
        data: {
          address: a.address, ordinal: a.ordinal, handle: a.handle ?? '', sequence: a.sequenceNumber,
          pod: attrs.pod ?? '', namespace: attrs.namespace ?? '', node: attrs.node ?? '', borrowed,
          released, releasedAt: a.releasedAt ?? '',
        },
      },
      h('td', { class: 'mono nowrap' }, released ? h('span', { class: 'swatch released' }) : null, a.address),
      h('td', { class: 'num' }, String(a.ordinal)),
      // A released address is nobody's: its row says when it was released
      // where a holder's handle and pod would be.
      released
        ? h('td', { colspan: 4, class: 'muted' }, h('span', { class: 'tag released' }, 'released'),
          ` at ${a.releasedAt}, out of use until the IP cooldown has passed`)
        : [
          h('td', { class: 'mono handle' }, a.handle ? breakable(a.handle) : '—'),
          h('td', {}, attrs.pod ?? '—'),
          h('td', {}, attrs.namespace ?? '—'),
          h('td', {}, attrs.node ? h('span', { class: 'swatch', vars: { '--node': nodeColor(attrs.node) } }) : null,
            attrs.node ?? '—', borrowed ? h('span', { class: 'tag' }, 'borrowed') : null),
        ],
      withOther ? h('td', { class: 'muted small' }, others(a).join(', ')) : null);
    }))));
}

// ----- flow --------------------------------------------------------------------------

function showError(error) {
  const banner = byId('error');
  banner.hidden = false;
  banner.dataset.status = error.status ?? '';
  banner.dataset.code = error.code ?? '';
  if (error.status === 401) {
    banner.replaceChildren(h('strong', {}, 'This server requires a bearer token, and this page cannot send one. '),
      'A browser adds no Authorization header to the page\'s API calls, so ', h('code', {}, error.url),
      ' answered 401. Read the figures with ',
      h('code', {}, `curl -H "Authorization: Bearer $TOKEN" ${location.origin}/v1/usage`),
      ', or open this page through a proxy that adds the header.');
  } else if (error.status === 0) {
    banner.replaceChildren(h('strong', {}, 'The server did not answer. '),
      `GET ${error.url} failed (${error.message}). Is ipam-server still running?`);
  } else if (error instanceof ApiFailure) {
    banner.replaceChildren(h('strong', {}, `GET ${error.url} answered ${error.status} (${error.code}). `),
      error.message);
  } else {
    banner.replaceChildren(h('strong', {}, 'The page failed: '), String(error.message ?? error));
  }
}

function clearError() {
  const banner = byId('error');
  banner.hidden = true;
  banner.replaceChildren();
}

// Draws what the URL asks for from the last usage read; fetches only the
// chosen block's addresses.
async function render() {
  const params = new URLSearchParams(location.search);
  state.pool = params.get('pool');
  state.block = params.get('block');
  const { pools } = state.usage;
  if (state.block && !state.pool) state.pool = findBlock(state.block)?.pool ?? null;
  if (!state.pool && pools.length > 0) state.pool = pools[0].name;
  clearError();
  renderPools();
  renderPoolDetail();
  renderOrphans();
  if (state.pool && !pools.some((p) => p.name === state.pool)) {
    showError(new ApiFailure('/v1/usage', 404, 'pool_not_found', `There is no pool named "${state.pool}".`));
  }
  byId('pool-detail').closest('.columns').classList.toggle('with-block', Boolean(state.block));
  await renderBlockDetail();
}

async function navigate(pool, block) {
  history.pushState(null, '', viewUrl(pool, block));
  await settle(render);
}

async function load() {
  await settle(async () => {
    state.usage = await getJson('/v1/usage');
    assignColors(state.usage);
    byId('updated').textContent = 'Updated ' + new Date().toLocaleTimeString();
    await render();
  });
}

// Runs a step and records its outcome on <body data-state>, so that a
// reader (or a test) knows when the page has finished drawing.
async function settle(step) {
  document.body.dataset.state = 'loading';
  try {
    await step();
    document.body.dataset.state = byId('error').hidden ? 'ready' : 'error';
  } catch (error) {
    showError(error);
    if (!state.usage) byId('updated').textContent = 'Not loaded';
    document.body.dataset.state = 'error';
  }
}

byId('refresh').addEventListener('click', load);
window.addEventListener('popstate', () => { if (state.usage) settle(render); });
load();
