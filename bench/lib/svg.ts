/**
 * The reaction-latency plot: cumulative distribution of each tool's
 * latencies on a logarithmic time axis, written by hand as SVG (no plotting
 * dependency). A CDF shows the median, the tail and the spread at once and
 * stays readable when two distributions are 10,000x apart.
 */
import { sortNumbers } from '../../testkit/stats.js';

export interface Series {
  label: string;
  color: string;
  valuesUs: number[];
}

const W = 720;
const H = 380;
const M = { left: 64, right: 20, top: 40, bottom: 52 };

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function fmtUs(us: number): string {
  if (us >= 1e6) return `${us / 1e6} s`;
  if (us >= 1e3) return `${us / 1e3} ms`;
  return `${us} µs`;
}

export function cdfSvg(title: string, series: Series[]): string {
  const all = series.flatMap((s) => s.valuesUs).filter((v) => v > 0 && Number.isFinite(v));
  const lo = Math.pow(10, Math.floor(Math.log10(all.length ? Math.min(...all) : 1)));
  const hi = Math.pow(10, Math.ceil(Math.log10(all.length ? Math.max(...all) : 10)));
  const loL = Math.log10(lo);
  const hiL = Math.max(Math.log10(hi), loL + 1);
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const x = (us: number) => M.left + ((Math.log10(Math.max(us, lo)) - loL) / (hiL - loL)) * pw;
  const y = (f: number) => M.top + (1 - f) * ph;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">${esc(title)}</text>`);
  for (let d = loL; d <= hiL; d++) {
    const xv = x(Math.pow(10, d)).toFixed(1);
    out.push(`<line x1="${xv}" y1="${M.top}" x2="${xv}" y2="${M.top + ph}" stroke="#ddd"/>`);
    out.push(`<text x="${xv}" y="${M.top + ph + 16}" text-anchor="middle">${esc(fmtUs(Math.pow(10, d)))}</text>`);
  }
  for (const f of [0, 0.25, 0.5, 0.75, 0.99, 1]) {
    const yv = y(f).toFixed(1);
    out.push(`<line x1="${M.left}" y1="${yv}" x2="${M.left + pw}" y2="${yv}" stroke="${f === 0.5 || f === 0.99 ? '#bbb' : '#eee'}"/>`);
    out.push(`<text x="${M.left - 6}" y="${(y(f) + 4).toFixed(1)}" text-anchor="end">${f === 0.99 ? 'p99' : f === 0.5 ? 'p50' : f}</text>`);
  }
  out.push(`<rect x="${M.left}" y="${M.top}" width="${pw}" height="${ph}" fill="none" stroke="#444"/>`);
  out.push(`<text x="${M.left + pw / 2}" y="${H - 12}" text-anchor="middle">packet on the sniff interface → RST leaving the reset interface (log scale)</text>`);
  out.push(`<text transform="translate(16 ${M.top + ph / 2}) rotate(-90)" text-anchor="middle">fraction of RSTs</text>`);
  series.forEach((s, i) => {
    const v = sortNumbers(s.valuesUs.filter((u) => Number.isFinite(u)));
    if (v.length) {
      // At most ~600 points: enough for a smooth step curve, small file.
      const step = Math.max(1, Math.floor(v.length / 600));
      const pts: string[] = [`${x(v[0]).toFixed(1)},${y(0).toFixed(1)}`];
      for (let k = 0; k < v.length; k += step) pts.push(`${x(v[k]).toFixed(1)},${y((k + 1) / v.length).toFixed(1)}`);
      pts.push(`${x(v[v.length - 1]).toFixed(1)},${y(1).toFixed(1)}`);
      out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${pts.join(' ')}"/>`);
    }
    const ly = M.top + 16 + i * 18;
    out.push(`<line x1="${M.left + 10}" y1="${ly - 4}" x2="${M.left + 34}" y2="${ly - 4}" stroke="${s.color}" stroke-width="3"/>`);
    out.push(`<text x="${M.left + 40}" y="${ly}">${esc(`${s.label} (n=${v.length})`)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
