/** The bench's CDF plot (bench/lib/svg.ts). */
import test from 'ava';
import { cdfSvg } from '../bench/lib/svg.js';

test('the plot is a self-contained SVG with one curve per tool on a log axis', (t) => {
  const svg = cdfSvg('title <&>', [
    { label: 'tcpreset', color: '#00f', valuesUs: [20, 30, 40, 55, 400] },
    { label: 'tcpkill', color: '#f00', valuesUs: [200_000, 300_000, 500_000] },
  ]);
  t.true(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"'));
  t.true(svg.trimEnd().endsWith('</svg>'));
  t.is(svg.match(/<polyline/g)?.length, 2);
  t.true(svg.includes('title &lt;&amp;&gt;'));
  t.true(svg.includes('10 µs') && svg.includes('1 s'));
  t.true(svg.includes('tcpreset (n=5)') && svg.includes('tcpkill (n=3)'));
});
