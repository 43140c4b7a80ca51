import test from 'ava';
import { Rng } from '../testkit/rng.js';
import { isIPv4, isIPv6 } from 'node:net';
import { ValidationError } from '../src/core/errors.js';
import { cidrContains, classify, formatIp, isUnicastHost, parseCidr, parseHost, parseIp, unmapV4 } from '../src/core/addr.js';

const ACCEPT: Array<[string, string]> = [
  // input -> canonical
  ['1.2.3.4', '1.2.3.4'],
  ['0.0.0.0', '0.0.0.0'],
  ['255.255.255.255', '255.255.255.255'],
  ['10.0.0.100', '10.0.0.100'],
  ['::', '::'],
  ['::1', '::1'],
  ['0:0:0:0:0:0:0:0', '::'],
  ['2001:DB8::1', '2001:db8::1'],
  ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
  ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // tie: leftmost run
  ['2001:db8:0:1:0:0:0:1', '2001:db8:0:1::1'], // longest run, not the first
  ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // one zero group is not compressed
  ['2001:db8::1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // "::" for one group accepted on input
  ['1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0'],
  ['::2:3:4:5:6:7:8', '0:2:3:4:5:6:7:8'],
  ['a:b:c:d:e:f:0:0', 'a:b:c:d:e:f::'],
  ['FE80::0202:B3FF:FE1E:8329', 'fe80::202:b3ff:fe1e:8329'],
  ['ff02::1', 'ff02::1'],
  ['::ffff:1.2.3.4', '::ffff:1.2.3.4'],
  ['::FFFF:C000:0280', '::ffff:192.0.2.128'], // mapped: mixed notation (RFC 5952 section 5)
  ['0:0:0:0:0:ffff:10.0.0.1', '::ffff:10.0.0.1'],
  ['64:ff9b::192.0.2.33', '64:ff9b::c000:221'],
  ['1:2:3:4:5:6:1.2.3.4', '1:2:3:4:5:6:102:304'],
  ['1:2:3:4:5::1.2.3.4', '1:2:3:4:5:0:102:304'],
  ['::1.2.3.4', '::102:304'],
];

const REJECT: Array<[string, RegExp]> = [
  ['', /empty/],
  ['010.1.2.3', /part 1 "010" has a leading zero/],
  ['1.2.3.04', /part 4 "04" has a leading zero/],
  ['00.1.2.3', /leading zero/],
  ['1.2.3', /4 dot-separated decimal parts, this has 3/],
  ['1.2.3.4.5', /this has 5/],
  ['1.2.3.4.', /this has 5/],
  ['256.1.1.1', /part 1 "256" is above 255/],
  ['1.2.3.1000', /part 4 "1000" is above 255/],
  ['1..3.4', /part 2 is empty/],
  ['1.2.3.-1', /part 4 "-1" is not a decimal number/],
  ['0x1.2.3.4', /"0x1" is not a decimal number/],
  ['1e2.1.1.1', /not a decimal number/],
  ['１.2.3.4', /not a decimal number/], // fullwidth digit
  [' 1.2.3.4', /whitespace/],
  ['1.2.3.4 ', /whitespace/],
  ['1.2.3.4\n', /whitespace/],
  ['1.2.3.0/24', /prefix is not a host address/],
  ['2001:db8::/32', /prefix is not a host address/],
  ['fe80::1%eth0', /zone ids \("%eth0"\)/],
  ['fe80::1%reset0', /zone ids \("%reset0"\)/],
  ['[::1]', /brackets/],
  ['1::2::3', /"::" may appear only once/],
  [':::1', /":::"/],
  ['12345::1', /group "12345" is not 1 to 4 hex digits/],
  ['g::1', /hex digits/],
  ['1:2:3:4:5:6:7', /8 groups .* this has 7/],
  ['1:2:3:4:5:6:7:8:9', /this has 9/],
  ['1:2:3:4:5:6:7:8::', /8 groups leave nothing for "::"/],
  ['::0:1:2:3:4:5:6:7', /leave nothing/],
  ['1:2:3:4:5:6:7:1.2.3.4', /this has 9/],
  [':1:2:3:4:5:6:7:8', /empty group/],
  ['1:2:3:4:5:6:7:8:', /empty group/],
  ['::1:', /empty group/],
  ['::1.2.3.4:1', /dotted IPv4 part "1.2.3.4" may only end/],
  ['1.2.3.4::', /may only end/],
  ['::ffff:1.2.3', /embedded IPv4 "1.2.3": .*this has 3/],
  ['::ffff:01.2.3.4', /embedded IPv4 "01.2.3.4": part 1 "01" has a leading zero/],
  ['::ffff:1.2.3.256', /above 255/],
];

for (const [text, canonical] of ACCEPT) {
  test(`accepts ${JSON.stringify(text)} as ${canonical}`, (t) => {
    const ip = parseIp(text);
    t.is(ip.canonical, canonical);
    t.is(ip.family, text.includes(':') ? 6 : 4);
    t.is(ip.bytes.length, ip.family === 4 ? 4 : 16);
    t.is(formatIp(ip.bytes), canonical);
    t.deepEqual(parseIp(canonical).bytes, ip.bytes, 'the canonical form parses back to the same bytes');
  });
}

for (const [text, reason] of REJECT) {
  test(`rejects ${JSON.stringify(text)}`, (t) => {
    const err = t.throws(() => parseIp(text, 'target'), { instanceOf: ValidationError });
    t.is(err.code, 'E_INVALID');
    t.is(err.field, 'target');
    t.is(err.value, text);
    t.true(err.message.startsWith(`target ${JSON.stringify(text)}: `), err.message);
    t.regex(err.message, reason);
  });
}

test('bytes are network order', (t) => {
  t.deepEqual(Array.from(parseIp('192.0.2.1').bytes), [192, 0, 2, 1]);
  t.deepEqual(Array.from(parseIp('2001:db8::ff00:42:8329').bytes), [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0xff, 0x00, 0x00, 0x42, 0x83, 0x29]);
  t.deepEqual(Array.from(parseIp('::ffff:1.2.3.4').bytes.slice(10)), [0xff, 0xff, 1, 2, 3, 4]);
});

test('non-strings are refused, formatIp wants 4 or 16 bytes', (t) => {
  t.throws(() => parseIp(42 as unknown as string), { instanceOf: ValidationError, message: /not a string/ });
  t.throws(() => formatIp(new Uint8Array(5)), { instanceOf: RangeError });
});


test('canonical IPv6 equals the WHATWG URL serializer (RFC 5952 compression) on random addresses', (t) => {
  const gen = new Rng(5952);
  const r = (): number => gen.u32();
  for (let n = 0; n < 3000; n++) {
    // Mostly zero groups so that runs, ties and single zeros all occur.
    const words = Array.from({ length: 8 }, () => (r() % 3 === 0 ? r() & 0xffff : r() % 4 === 0 ? 1 : 0));
    if (words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff) words[5] = 0xfffe; // mapped: we print mixed
    // Spell it the long way, with random case and leading zeros.
    const text = words
      .map((w) => {
        const h = w.toString(16).padStart(1 + (r() % 4), '0').slice(-4);
        return r() & 1 ? h.toUpperCase() : h;
      })
      .join(':');
    const ip = parseIp(text);
    const oracle = new URL(`http://[${text}]/`).hostname.slice(1, -1);
    t.is(ip.canonical, oracle, text);
    t.deepEqual(parseIp(oracle).bytes, ip.bytes);
  }
});

/** Variants of valid addresses with one random edit: parse succeeds exactly when Node's net.isIP* says valid. */
test('accept/reject agrees with node:net on mutated addresses', (t) => {
  const gen = new Rng(4291);
  const r = (): number => gen.u32();
  const seeds = [...ACCEPT.map(([s]) => s), '2001:db8:85a3::8a2e:370:7334', '192.168.100.200', '::ffff:255.255.255.255'];
  const alphabet = '0123456789abcdefABCDEFg:.';
  let checked = 0;
  for (let n = 0; n < 20000; n++) {
    const s = seeds[r() % seeds.length];
    const i = r() % (s.length + 1);
    const op = r() % 3;
    const c = alphabet[r() % alphabet.length];
    const m = op === 0 ? s.slice(0, i) + s.slice(i + 1) : op === 1 ? s.slice(0, i) + c + s.slice(i) : s.slice(0, i) + c + s.slice(i + 1);
    let ok = true;
    try {
      parseIp(m);
    } catch (e) {
      if (!(e instanceof ValidationError)) throw e;
      ok = false;
    }
    const want = m.includes(':') ? isIPv6(m) : isIPv4(m);
    if (ok !== want) t.fail(`${JSON.stringify(m)}: parseIp ${ok ? 'accepts' : 'rejects'}, node:net ${want ? 'accepts' : 'rejects'}`);
    checked++;
  }
  t.is(checked, 20000);
});

const HOSTS_OK = ['1.1.1.1', '10.0.0.1', '169.254.1.1', '223.255.255.255', '240.0.0.1', '255.255.255.254', '2001:db8::1', 'fe80::1', '::2', 'fec0::1', '64:ff9b::1.2.3.4', '::ffff:10.0.0.1'];
const HOSTS_BAD: Array<[string, RegExp]> = [
  ['0.0.0.0', /unspecified/],
  ['0.1.2.3', /this network/],
  ['127.0.0.1', /loopback/],
  ['127.255.255.254', /loopback/],
  ['224.0.0.1', /multicast/],
  ['239.255.255.255', /multicast/],
  ['255.255.255.255', /limited broadcast/],
  ['::', /unspecified/],
  ['::1', /loopback/],
  ['ff02::1', /multicast/],
  ['FF05::1:3', /multicast/],
  ['::ffff:127.0.0.1', /loopback/],
  ['::ffff:0.0.0.0', /unspecified/],
  ['::ffff:224.0.0.251', /multicast/],
];

test('classify / isUnicastHost', (t) => {
  for (const h of HOSTS_OK) {
    t.is(classify(parseIp(h)), null, h);
    t.true(isUnicastHost(parseIp(h)), h);
  }
  for (const [h, why] of HOSTS_BAD) {
    t.regex(classify(parseIp(h)) ?? '', why, h);
    t.false(isUnicastHost(parseIp(h)), h);
    t.false(isUnicastHost(parseIp(h).bytes), `${h} as bytes`);
  }
  t.true(isUnicastHost(Uint8Array.of(10, 0, 0, 1)));
  t.true(isUnicastHost(parseIp('2001:db8::1').bytes));
});

test('unmapV4: mapped IPv6 becomes IPv4, everything else is unchanged', (t) => {
  const m = unmapV4(parseIp('::ffff:192.0.2.7'));
  t.deepEqual(m, { family: 4, bytes: Uint8Array.from([192, 0, 2, 7]), canonical: '192.0.2.7' });
  for (const s of ['192.0.2.7', '::192.0.2.7', '64:ff9b::192.0.2.7', '::fffe:192.0.2.7', '1::ffff:192.0.2.7']) {
    const ip = parseIp(s);
    t.is(unmapV4(ip), ip, s);
  }
});

test('parseHost: strict, unmapped, unicast only; errors name the field and the value', (t) => {
  t.deepEqual(parseHost('::ffff:10.1.2.3'), { family: 4, bytes: Uint8Array.from([10, 1, 2, 3]), canonical: '10.1.2.3' });
  t.is(parseHost('2001:DB8::0001').canonical, '2001:db8::1');
  const e1 = t.throws(() => parseHost('::ffff:127.0.0.1', 'target'), { instanceOf: ValidationError });
  t.is(e1.message, 'target "::ffff:127.0.0.1": loopback traffic never reaches a mirror port');
  const e2 = t.throws(() => parseHost('224.0.0.1'), { instanceOf: ValidationError });
  t.is(e2.field, 'host');
  t.regex(e2.message, /^host "224\.0\.0\.1": a multicast address/);
  t.throws(() => parseHost('010.0.0.1'), { instanceOf: ValidationError, message: /leading zero/ });
});

test('parseCidr accepts networks and bare hosts, canonicalizes, turns mapped /96+ into IPv4', (t) => {
  const cases: Array<[string, 4 | 6, number, string]> = [
    ['10.0.0.0/8', 4, 8, '10.0.0.0/8'],
    ['0.0.0.0/0', 4, 0, '0.0.0.0/0'],
    ['192.168.1.128/25', 4, 25, '192.168.1.128/25'],
    ['10.0.0.1', 4, 32, '10.0.0.1/32'],
    ['10.0.0.1/32', 4, 32, '10.0.0.1/32'],
    ['2001:DB8:0::/48', 6, 48, '2001:db8::/48'],
    ['::/0', 6, 0, '::/0'],
    ['2001:db8::1', 6, 128, '2001:db8::1/128'],
    ['2001:db8:8000::/33', 6, 33, '2001:db8:8000::/33'],
    ['::ffff:10.0.0.0/104', 4, 8, '10.0.0.0/8'],
    ['::ffff:0:0/96', 4, 0, '0.0.0.0/0'],
    ['::ffff:10.1.2.3', 4, 32, '10.1.2.3/32'],
    ['::fffe:0:0/96', 6, 96, '::fffe:0:0/96'],
  ];
  for (const [text, family, prefixLen, canonical] of cases) {
    const c = parseCidr(text);
    t.like(c, { family, prefixLen, canonical }, text);
    t.is(c.bytes.length, family === 4 ? 4 : 16);
  }
});

test('parseCidr rejects with reasons', (t) => {
  const bad: Array<[string, RegExp]> = [
    ['10.0.0.1/8', /host bits are set; the network is 10\.0\.0\.0\/8/],
    ['2001:db8::1/32', /host bits are set; the network is 2001:db8::\/32/],
    ['10.0.0.0/33', /prefix length 33 is above 32/],
    ['2001:db8::/129', /above 128/],
    ['10.0.0.0/08', /prefix length "08" is not a decimal number/],
    ['10.0.0.0/', /prefix length "" is not/],
    ['10.0.0.0/8/9', /prefix length "8\/9"/],
    ['10.0.0.0/-1', /prefix length "-1"/],
    ['/8', /empty address/],
    ['010.0.0.0/8', /leading zero/],
    ['fe80::%eth0/64', /zone ids/],
    [' 10.0.0.0/8', /whitespace/],
  ];
  for (const [text, why] of bad) {
    const e = t.throws(() => parseCidr(text, 'protected'), { instanceOf: ValidationError }, text);
    t.is(e.field, 'protected');
    t.true(e.message.startsWith(`protected ${JSON.stringify(text)}: `), e.message);
    t.regex(e.message, why, text);
  }
});

test('cidrContains', (t) => {
  const yes: Array<[string, string]> = [
    ['10.0.0.0/8', '10.255.255.255'],
    ['10.0.0.0/8', '10.0.0.0'],
    ['10.0.0.0/8', '::ffff:10.1.2.3'], // cannot be dodged by spelling
    ['::ffff:10.0.0.0/104', '10.9.9.9'],
    ['192.168.1.128/25', '192.168.1.200'],
    ['0.0.0.0/0', '8.8.8.8'],
    ['10.0.0.1', '10.0.0.1'],
    ['2001:db8::/32', '2001:db8:ffff::1'],
    ['2001:db8::/33', '2001:db8:7fff::1'],
    ['::/0', '2001:db8::1'],
    ['2001:db8::1/128', '2001:DB8::1'],
  ];
  const no: Array<[string, string]> = [
    ['10.0.0.0/8', '11.0.0.0'],
    ['10.0.0.0/8', '9.255.255.255'],
    ['192.168.1.128/25', '192.168.1.127'],
    ['0.0.0.0/0', '2001:db8::1'],
    ['10.0.0.1', '10.0.0.2'],
    ['2001:db8::/32', '2001:db9::'],
    ['2001:db8::/33', '2001:db8:8000::'],
    ['::/0', '1.2.3.4'], // an IPv6 network holds IPv6 addresses only
    ['::/0', '::ffff:1.2.3.4'],
    ['2001:db8::1/128', '2001:db8::2'],
  ];
  for (const [c, ip] of yes) t.true(cidrContains(parseCidr(c), parseIp(ip)), `${c} contains ${ip}`);
  for (const [c, ip] of no) t.false(cidrContains(parseCidr(c), parseIp(ip)), `${c} does not contain ${ip}`);
});

test('addr.ts imports nothing but errors.ts at run time, and model.ts\'s types (the CLI loads it)', async (t) => {
  const { readFile } = await import('node:fs/promises');
  const src = await readFile(new URL('../../src/core/addr.ts', import.meta.url), 'utf8');
  const imports = [...src.matchAll(/^\s*import\s(type\s)?[^;]*?from\s+'([^']+)'/gm)].map((m) => `${m[1] ? 'type ' : ''}${m[2]}`);
  t.deepEqual(imports, ['./errors.js', 'type ./model.js']);
  // What runs: the compiled module loads errors.js only.
  const js = await readFile(new URL('../src/core/addr.js', import.meta.url), 'utf8');
  t.deepEqual([...js.matchAll(/^\s*import\s[^;]*?from\s+'([^']+)'/gm)].map((m) => m[1]), ['./errors.js']);
});
