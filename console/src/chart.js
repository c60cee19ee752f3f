// Bar charts drawn by uPlot (bundled locally). A chart is a <figure> whose caption
// states the total, and whose data-total holds it, so the figure is never the only
// way to read the numbers: each chart sits next to a table or figures.

import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

import { h } from './ui.js';
import { usd } from './format.js';

const HEIGHT = 220;
const COLOR = '#2f6fdf';

/**
 * labels: x labels (days as YYYY-MM-DD when `days`), values: numbers, caption: text.
 * format: how a value reads (USD by default).
 */
export function barChart({ labels, values, caption, days = false, format = usd, seriesLabel = 'Spend' }) {
  const total = values.reduce((a, b) => a + b, 0);
  const plot = h('div', { class: 'chart-plot', 'aria-hidden': 'true' });
  const fig = h('figure', { class: 'chart', dataset: { total: String(Math.round(total * 1e6) / 1e6), points: String(values.length) } },
    plot, h('figcaption', {}, caption, ' · total ', h('strong', { class: 'chart-total' }, format(total))));
  const xs = days ? labels.map((d) => Date.parse(`${d}T00:00:00Z`) / 1000) : labels.map((_, i) => i);
  const opts = {
    width: 300,
    height: HEIGHT,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'),
    legend: { show: true, live: true },
    cursor: { drag: { x: false, y: false }, points: { show: false } },
    scales: { x: { time: days, range: (u, min, max) => [min - (days ? 43200 : 0.5), max + (days ? 43200 : 0.5)] }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
    axes: [
      days
        ? { space: 60 }
        : { space: 40, incrs: [1], values: (u, splits) => splits.map((i) => shorten(labels[i] ?? '')), rotate: 0 },
      { size: axisWidth, values: (u, splits) => splits.map((v) => format(v)) },
    ],
    series: [
      days ? { label: 'Day', value: (u, v) => (v == null ? '—' : new Date(v * 1000).toISOString().slice(0, 10)) } : { label: 'Group', value: (u, v) => (v == null ? '—' : labels[v] ?? '') },
      { label: seriesLabel, stroke: COLOR, fill: `${COLOR}cc`, width: 1, paths: uPlot.paths.bars({ size: [0.7, 48], align: 0 }), points: { show: false }, value: (u, v) => (v == null ? '—' : format(v)) },
    ],
  };
  // Drawn once the figure is in the page, at the width it gets, and again when that changes.
  queueMicrotask(() => {
    // Zero-spend days draw no bar (a zero-height bar would read as a dashed line).
    const u = new uPlot(opts, [xs, values.map((v) => (v === 0 ? null : v))], plot);
    const fit = () => u.setSize({ width: Math.max(200, plot.clientWidth), height: HEIGHT });
    fit();
    new ResizeObserver(fit).observe(plot);
  });
  return fig;
}

/** Room for the longest y label, so "$0.000006" is never cut. */
function axisWidth(u, labels) {
  const longest = Math.max(4, ...(labels ?? []).map((l) => String(l).length));
  return Math.ceil(longest * 7.5 + 20);
}

function shorten(s) {
  return s.length > 14 ? `${s.slice(0, 13)}…` : s;
}

/** Fills the days the API has no bucket for with zero. */
export function dailySeries(rows, days, pick = (r) => r.cost) {
  const by = new Map(rows.map((r) => [r.bucket, r]));
  return days.map((d) => (by.has(d) ? pick(by.get(d)) : 0));
}
