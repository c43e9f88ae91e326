// Small SVG charts: a sparkline, a time-series line chart and a horizontal bar chart. They
// draw what the API computed; colours come from CSS classes (s0 … s7), so the stylesheet
// owns the palette and no inline style is needed.

import { h, s, clock } from './dom.js';

const SERIES = 8;

// seriesClass is the colour class of the i-th series.
export const seriesClass = (i) => 's' + (i % SERIES);

// niceCeil rounds v up to 1, 2, 2.5 or 5 times a power of ten, so axis labels stay short.
function niceCeil(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) {
    if (v <= m * p) return m * p;
  }
  return 10 * p;
}

// sparkline draws values (oldest first) as a line over a filled area, the last value marked.
// title names the series in the tooltip; format formats values in it.
export function sparkline(values, { title = '', cls = 's0', format = String, width = 150, height = 32 } = {}) {
  if (!values.length) {
    return h('span', { class: 'spark-empty', title: title + ': no data' }, 'no data');
  }
  const n = values.length;
  const max = Math.max(0, ...values);
  const x = (i) => (n === 1 ? width - 2 : 1 + (i * (width - 4)) / (n - 1));
  const y = (v) => (max === 0 ? height - 2 : height - 2 - (v / max) * (height - 6));
  const pts = values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`);
  const last = values[n - 1];
  return s('svg', {
    class: ['spark', cls].join(' '), viewBox: `0 0 ${width} ${height}`, width, height,
    role: 'img', 'aria-label': `${title}: last ${format(last)}, peak ${format(max)}`,
  },
  s('title', null, `${title}\nlast ${format(last)} · peak ${format(max)}`),
  s('path', { class: 'area', d: `M${x(0).toFixed(1)},${height} L${pts.join(' L')} L${x(n - 1).toFixed(1)},${height} Z` }),
  s('polyline', { class: 'line', points: pts.join(' ') }),
  s('circle', { class: 'dot', cx: x(n - 1).toFixed(1), cy: y(last).toFixed(1), r: 2.2 }));
}

// lineChart draws series ({name, values}) over times (Dates, one per value). format formats
// the y values. Hovering a column shows every series' value at that time.
// width is the chart's width in CSS pixels (the SVG is drawn 1:1, so text keeps its size).
export function lineChart(series, times, { format = String, label = '', width = 760 } = {}) {
  const W = Math.max(360, Math.round(width)), H = 220, L = 56, R = 14, T = 12, B = 26;
  const n = times.length;
  const pw = W - L - R, ph = H - T - B;
  let max = 0;
  for (const sr of series) for (const v of sr.values) max = Math.max(max, v);
  const top = niceCeil(max);
  const x = (i) => L + (n <= 1 ? pw : (i * pw) / (n - 1));
  const y = (v) => T + ph - (v / top) * ph;
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': label });
  for (let k = 0; k <= 4; k++) {
    const v = (top * k) / 4;
    svg.append(
      s('line', { class: 'grid', x1: L, x2: W - R, y1: y(v), y2: y(v) }),
      s('text', { class: 'axis', x: L - 6, y: y(v) + 4, 'text-anchor': 'end' }, format(v)));
  }
  const ticks = Math.min(6, n);
  for (let k = 0; k < ticks; k++) {
    const i = ticks === 1 ? 0 : Math.round((k * (n - 1)) / (ticks - 1));
    svg.append(s('text', { class: 'axis', x: x(i), y: H - 8, 'text-anchor': k === 0 ? 'start' : k === ticks - 1 ? 'end' : 'middle' }, clock(times[i])));
  }
  series.forEach((sr, j) => {
    const pts = sr.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    svg.append(s('polyline', { class: ['series', seriesClass(j)].join(' '), points: pts }));
  });
  // One hover column per time, with every series' value in its tooltip.
  const colW = n <= 1 ? pw : pw / (n - 1);
  for (let i = 0; i < n; i++) {
    const lines = series.map((sr) => `${sr.name}: ${format(sr.values[i])}`);
    svg.append(s('rect', { class: 'hover', x: x(i) - colW / 2, y: T, width: colW, height: ph },
      s('title', null, [clock(times[i]), ...lines].join('\n'))));
  }
  return h('figure', { class: 'chart-box' },
    svg,
    h('figcaption', { class: 'legend' }, series.map((sr, j) =>
      h('span', { class: 'key' }, legendSwatch(j), sr.name, sr.note ? h('span', { class: 'muted' }, ' ', sr.note) : null))));
}

function legendSwatch(j) {
  return s('svg', { class: ['swatch', seriesClass(j)].join(' '), viewBox: '0 0 12 12', width: 12, height: 12 },
    s('rect', { x: 0, y: 0, width: 12, height: 12, rx: 2 }));
}

// barChart draws one horizontal stacked bar per item ({name, parts: [numbers], total}).
// parts names the stack's parts; format formats the values; width is in CSS pixels.
export function barChart(items, { parts = ['value'], format = String, label = '', width = 760 } = {}) {
  const W = Math.max(320, Math.round(width)), rowH = 24, L = 170, R = 70, T = 4;
  const H = T * 2 + items.length * rowH;
  const max = Math.max(1, ...items.map((it) => it.total));
  const pw = W - L - R;
  const svg = s('svg', { class: 'chart bars', viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': label });
  items.forEach((it, r) => {
    const yy = T + r * rowH;
    const name = it.name === '' ? '(none)' : it.name;
    const short = name.length > 24 ? name.slice(0, 23) + '…' : name;
    svg.append(s('text', { class: 'label', x: L - 8, y: yy + rowH / 2 + 4, 'text-anchor': 'end' }, s('title', null, name), short));
    let xx = L;
    it.parts.forEach((v, k) => {
      const w = (v / max) * pw;
      if (w > 0) {
        svg.append(s('rect', { class: ['bar', seriesClass(k)].join(' '), x: xx, y: yy + 4, width: Math.max(w, 1), height: rowH - 8, rx: 2 },
          s('title', null, `${name}\n${parts[k]}: ${format(v)}`)));
      }
      xx += w;
    });
    svg.append(s('text', { class: 'value', x: xx + 6, y: yy + rowH / 2 + 4 }, format(it.total)));
  });
  return h('figure', { class: 'chart-box' },
    svg,
    parts.length > 1 ? h('figcaption', { class: 'legend' }, parts.map((p, k) => h('span', { class: 'key' }, legendSwatch(k), p))) : null);
}
