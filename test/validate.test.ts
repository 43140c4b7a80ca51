import test from 'ava';
import { TcpresetError, ValidationError, showValue } from '../src/core/errors.js';
import { validateDuration, validateEngid, validateHost, validateIfname, validatePort } from '../src/core/validate.js';
import {
  MAX_LINE_BYTES,
  encodeLine,
  errorResponse,
  extractId,
  okResponse,
  parseRequest,
  parseResponse,
} from '../src/control/protocol.js';

function invalid(t: import('ava').ExecutionContext, fn: () => unknown, field: string, reason: RegExp): void {
  const err = t.throws(fn, { instanceOf: ValidationError });
  t.is(err!.code, 'E_INVALID');
  t.is(err!.field, field);
  t.regex(err!.message, reason);
  t.is(err!.exitCode, 65);
}

// ---------------------------------------------------------------- ENGID

test('engid: ordinary ids pass unchanged', (t) => {
  for (const id of ['ids-1', 'a', 'ML_model.7', '9f3c1a2b', 'Suricata:2024897', 'détecteur', 'x'.repeat(64)]) {
    t.is(validateEngid(id), id);
  }
});

test('engid: empty, too long, whitespace, control, format chars, leading dash refused with a reason', (t) => {
  invalid(t, () => validateEngid(''), 'engid', /must not be empty/);
  invalid(t, () => validateEngid('x'.repeat(65)), 'engid', /65 characters long; at most 64/);
  invalid(t, () => validateEngid('ids 1'), 'engid', /whitespace at position 4/);
  invalid(t, () => validateEngid('ids\t1'), 'engid', /whitespace/);
  invalid(t, () => validateEngid('ids\u00a01'), 'engid', /whitespace/); // no-break space
  invalid(t, () => validateEngid('ids\u20001'), 'engid', /whitespace/); // en quad (Zs)
  invalid(t, () => validateEngid('ids\u0001'), 'engid', /non-printable character U\+0001 at position 4/);
  invalid(t, () => validateEngid('ids\u007f'), 'engid', /U\+007F/);
  invalid(t, () => validateEngid('a\u200bb'), 'engid', /U\+200B/); // zero-width space (Cf)
  invalid(t, () => validateEngid('a\u202eb'), 'engid', /U\+202E/); // bidi override
  invalid(t, () => validateEngid('-rf'), 'engid', /must not start with "-"/);
  invalid(t, () => validateEngid(12), 'engid', /must be a string/);
});

test('engid: length is counted in characters, not UTF-16 units', (t) => {
  const emoji = '\u{1F6A8}'.repeat(64); // 128 UTF-16 units, 64 characters
  t.is(validateEngid(emoji), emoji);
  t.throws(() => validateEngid(emoji + 'x'), { message: /65 characters/ });
});

// ---------------------------------------------------------------- HOST

test('host: unicast IPv4/IPv6 accepted and canonicalized', (t) => {
  t.is(validateHost('10.1.2.3').canonical, '10.1.2.3');
  t.is(validateHost('192.0.2.255').family, 4);
  t.is(validateHost('2001:DB8:0:0:0:0:0:1').canonical, '2001:db8::1');
  t.is(validateHost('fe80::1').canonical, 'fe80::1'); // link-local is a host on the segment
  t.deepEqual(validateHost('::ffff:10.1.2.3'), validateHost('10.1.2.3')); // mapped -> IPv4
});

test('host: malformed and non-unicast refused, naming the value and why', (t) => {
  invalid(t, () => validateHost('010.1.2.3'), 'host', /"010.1.2.3".*leading zero/);
  invalid(t, () => validateHost('1.2.3'), 'host', /4 dot-separated/);
  invalid(t, () => validateHost('256.1.2.3'), 'host', /above 255/);
  invalid(t, () => validateHost('fe80::1%eth0'), 'host', /zone id/);
  invalid(t, () => validateHost('10.0.0.0/8'), 'host', /prefix/);
  invalid(t, () => validateHost(' 10.1.2.3'), 'host', /whitespace/);
  invalid(t, () => validateHost('[2001:db8::1]'), 'host', /brackets/);
  invalid(t, () => validateHost('example.com'), 'host', /.+/);
  invalid(t, () => validateHost(''), 'host', /empty/);
  invalid(t, () => validateHost('0.0.0.0'), 'host', /unspecified/);
  invalid(t, () => validateHost('::'), 'host', /unspecified/);
  invalid(t, () => validateHost('127.0.0.1'), 'host', /loopback/);
  invalid(t, () => validateHost('::1'), 'host', /loopback/);
  invalid(t, () => validateHost('224.0.0.1'), 'host', /multicast/);
  invalid(t, () => validateHost('ff02::1'), 'host', /multicast/);
  invalid(t, () => validateHost('255.255.255.255'), 'host', /broadcast/);
  invalid(t, () => validateHost('::ffff:127.0.0.1'), 'host', /loopback/);
  invalid(t, () => validateHost(167837955), 'host', /must be a string/);
});

test('host: the field name given is the one reported', (t) => {
  invalid(t, () => validateHost('1.2.3.04', 'host (-h)'), 'host (-h)', /^host \(-h\) "1\.2\.3\.04": /);
});

// ---------------------------------------------------------------- port

test('port: strict decimal text and integer numbers 1..65535', (t) => {
  t.is(validatePort('1'), 1);
  t.is(validatePort('80'), 80);
  t.is(validatePort('65535'), 65535);
  t.is(validatePort(443), 443);
  for (const [bad, why] of [
    ['0', /at least 1/],
    ['65536', /above 65535/],
    ['100000', /above 65535/],
    ['+1', /digits only/],
    ['-1', /digits only/],
    ['1e3', /digits only/],
    ['0x50', /digits only/],
    ['080', /leading zeros/],
    ['8 0', /digits only/],
    ['80 ', /digits only/],
    ['', /empty/],
    ['٨٠', /digits only/], // Arabic-Indic digits
  ] as const) {
    invalid(t, () => validatePort(bad), 'port', why);
  }
  invalid(t, () => validatePort(80.5), 'port', /integer/);
  invalid(t, () => validatePort(0), 'port', /at least 1/);
  invalid(t, () => validatePort(70000), 'port', /above 65535/);
  invalid(t, () => validatePort(null), 'port', /integer/);
});

// ---------------------------------------------------------------- duration

test('duration: positive whole seconds up to the max passed in (default 86400)', (t) => {
  t.is(validateDuration('180'), 180);
  t.is(validateDuration(1), 1);
  t.is(validateDuration('86400'), 86400);
  invalid(t, () => validateDuration('86401'), 'duration', /above the maximum of 86400 seconds/);
  t.is(validateDuration('86401', 100000), 86401);
  invalid(t, () => validateDuration('600', 300), 'duration', /maximum of 300/);
  t.is(validateDuration('999999999', Number.MAX_SAFE_INTEGER), 999999999);
  for (const [bad, why] of [
    ['0', /at least 1/],
    ['-5', /digits only/],
    ['1.5', /digits only/],
    ['180s', /no unit/],
    ['3m', /no unit/],
    ['1e3', /digits only/],
    ['0180', /leading zeros/],
    ['', /empty/],
    ['99999999999999999999', /too large/],
  ] as const) {
    invalid(t, () => validateDuration(bad, Number.MAX_SAFE_INTEGER), 'duration', why);
  }
  invalid(t, () => validateDuration(2.5), 'duration', /whole number/);
  invalid(t, () => validateDuration(0), 'duration', /at least 1/);
  invalid(t, () => validateDuration(Infinity, Infinity), 'duration', /whole number/);
});

// ---------------------------------------------------------------- ifname

test('ifname: Linux name rules', (t) => {
  for (const ok of ['eth0', 'lo', 'enp0s31f6', 'veth-a.100', 'x'.repeat(15), 'br_lan', 'wlé']) t.is(validateIfname(ok), ok);
  invalid(t, () => validateIfname(''), 'interface', /empty/);
  invalid(t, () => validateIfname('x'.repeat(16)), 'interface', /16 bytes long; .* at most 15/);
  invalid(t, () => validateIfname('éééééééé'), 'interface', /16 bytes/); // 8 chars, 16 bytes
  invalid(t, () => validateIfname('.'), 'interface', /not a valid interface name/);
  invalid(t, () => validateIfname('..'), 'interface', /not a valid/);
  invalid(t, () => validateIfname('../x'), 'interface', /"\/"/);
  invalid(t, () => validateIfname('eth0:1'), 'interface', /":"/);
  invalid(t, () => validateIfname('eth 0'), 'interface', /whitespace/);
  invalid(t, () => validateIfname('eth\n'), 'interface', /whitespace/);
  invalid(t, () => validateIfname('eth\u0001'), 'interface', /control/);
  // Invisible characters (found by the CLI fuzz: "eth0\u200b" reached the daemon).
  invalid(t, () => validateIfname('eth0\u200b'), 'interface', /invisible formatting characters \(U\+200B at position 5\)/);
  invalid(t, () => validateIfname('\u202eeth0'), 'interface', /U\+202E at position 1/);
  invalid(t, () => validateIfname('\ufeffeth0'), 'interface', /whitespace/); // JS counts the BOM as whitespace
  invalid(t, () => validateIfname('eth%d'), 'interface', /"%"/);
  invalid(t, () => validateIfname(3, 'sniffIf'), 'sniffIf', /string/);
});

// ---------------------------------------------------------------- protocol requests

const create = {
  v: 1,
  op: 'create',
  engid: 'ids-1',
  sniffIf: 'eth1',
  resetIf: 'eth0',
  host: '2001:DB8::0:1',
  duration: 180,
};
const line = (o: object): string => JSON.stringify(o);

function protoErr(t: import('ava').ExecutionContext, l: string, code: string, msg: RegExp): TcpresetError {
  const err = t.throws(() => parseRequest(l), { instanceOf: TcpresetError })!;
  t.is(err.code as string, code, err.message);
  t.regex(err.message, msg);
  return err;
}

test('parseRequest: a full create is normalized (canonical host, id echoed, port/mode kept)', (t) => {
  t.deepEqual(parseRequest(line({ ...create, id: 'a1', port: 443, mode: 'l2' }) + '\n'), {
    v: 1,
    id: 'a1',
    op: 'create',
    engid: 'ids-1',
    sniffIf: 'eth1',
    resetIf: 'eth0',
    // Parsed once here: canonical text, family and bytes (the job manager and the Enforcer use them as they are).
    host: { family: 6, bytes: Uint8Array.of(0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1), canonical: '2001:db8::1' },
    duration: 180,
    port: 443,
    mode: 'l2',
  });
  const r = parseRequest(line({ ...create, port: null }));
  t.false('port' in r);
  t.false('id' in r);
});

test('parseRequest: other ops', (t) => {
  t.deepEqual(parseRequest('{"v":1,"op":"list","id":7}'), { v: 1, id: 7, op: 'list' });
  t.deepEqual(parseRequest('{"v":1,"op":"status"}'), { v: 1, op: 'status' });
  t.deepEqual(parseRequest('{"v":1,"op":"version"}'), { v: 1, op: 'version' });
  t.deepEqual(parseRequest('{"v":1,"op":"cancel","jobId":"3f2a9c01"}'), { v: 1, op: 'cancel', jobId: '3f2a9c01' });
  t.deepEqual(parseRequest(line({ v: 1, op: 'cancel', engid: 'e', sniffIf: 'eth1', host: '::ffff:10.0.0.1', port: 22 })), {
    v: 1,
    op: 'cancel',
    engid: 'e',
    sniffIf: 'eth1',
    host: { family: 4, bytes: Uint8Array.of(10, 0, 0, 1), canonical: '10.0.0.1' },
    port: 22,
  });
});

test('parseRequest: not a protocol line -> E_PROTOCOL', (t) => {
  protoErr(t, '{"v":1,"op":', 'E_PROTOCOL', /not valid JSON/);
  protoErr(t, '[1,2]', 'E_PROTOCOL', /JSON object/);
  protoErr(t, 'null', 'E_PROTOCOL', /JSON object/);
  protoErr(t, '{"op":"list"}', 'E_PROTOCOL', /"v"/);
  protoErr(t, '{"v":2,"op":"list"}', 'E_PROTOCOL', /version 2; this side speaks 1/);
  protoErr(t, '{"v":"1","op":"list"}', 'E_PROTOCOL', /version "1"/);
  protoErr(t, '{"v":1,"op":"list"}\n{"v":1,"op":"list"}', 'E_PROTOCOL', /more than one line/);
  const big = line({ v: 1, op: 'list', id: 'x'.repeat(MAX_LINE_BYTES) });
  protoErr(t, big, 'E_PROTOCOL', /bytes; the limit is 65536/);
});

test('parseRequest: malformed requests -> E_USAGE naming the field', (t) => {
  protoErr(t, '{"v":1}', 'E_USAGE', /"op"/);
  protoErr(t, '{"v":1,"op":"kill"}', 'E_USAGE', /unknown op "kill"/);
  protoErr(t, '{"v":1,"op":7}', 'E_USAGE', /unknown op 7/);
  protoErr(t, '{"v":1,"op":"list","extra":1}', 'E_USAGE', /unknown field "extra"/);
  protoErr(t, '{"v":1,"op":"list","id":{}}', 'E_USAGE', /"id"/);
  for (const f of ['engid', 'sniffIf', 'resetIf', 'host', 'duration']) {
    const o: Record<string, unknown> = { ...create };
    delete o[f];
    const err = protoErr(t, line(o), 'E_USAGE', new RegExp(`lacks the required field "${f}"`));
    t.is(err.details.field, f);
  }
  protoErr(t, line({ ...create, duration: '180' }), 'E_USAGE', /"duration" must be a number, not a string/);
  protoErr(t, line({ ...create, host: 167837955 }), 'E_USAGE', /"host" must be a string, not a number/);
  protoErr(t, line({ ...create, port: '80' }), 'E_USAGE', /"port" must be a number/);
  protoErr(t, line({ ...create, engid: ['a'] }), 'E_USAGE', /"engid" must be a string, not an array/);
  protoErr(t, line({ ...create, sniffIf: null }), 'E_USAGE', /"sniffIf" must be a string, not null/);
  protoErr(t, line({ ...create, expiresAt: 1 }), 'E_USAGE', /unknown field "expiresAt"/);
  protoErr(t, line({ ...create, __proto__x: 1 }), 'E_USAGE', /unknown field/);
  protoErr(t, '{"v":1,"op":"create","__proto__":{"x":1}}', 'E_USAGE', /unknown field "__proto__"/);
  protoErr(t, '{"v":1,"op":"cancel"}', 'E_USAGE', /either "jobId" or "engid", "sniffIf" and "host"/);
  protoErr(t, '{"v":1,"op":"cancel","jobId":"a","engid":"b"}', 'E_USAGE', /unknown field "engid"/);
  protoErr(t, '{"v":1,"op":"cancel","engid":"b","host":"10.0.0.1"}', 'E_USAGE', /"sniffIf"/);
  protoErr(t, '{"v":1,"op":"cancel","jobId":5}', 'E_USAGE', /"jobId" must be a string/);
});

test('parseRequest: bad values -> E_INVALID naming the field', (t) => {
  const v = (o: object, field: string, msg: RegExp): void => {
    const err = protoErr(t, line(o), 'E_INVALID', msg);
    t.is(err.details.field, field);
  };
  v({ ...create, host: '010.1.2.3' }, 'host', /leading zero/);
  v({ ...create, host: '224.1.1.1' }, 'host', /multicast/);
  v({ ...create, port: 0 }, 'port', /at least 1/);
  v({ ...create, port: 65536 }, 'port', /above 65535/);
  v({ ...create, port: 1.5 }, 'port', /integer/);
  v({ ...create, duration: 0 }, 'duration', /at least 1/);
  v({ ...create, duration: 2.5 }, 'duration', /whole number/);
  v({ ...create, engid: 'a b' }, 'engid', /whitespace/);
  v({ ...create, sniffIf: 'x'.repeat(16) }, 'sniffIf', /at most 15/);
  v({ ...create, resetIf: '../../etc' }, 'resetIf', /"\/"/);
  v({ ...create, mode: 'l4' }, 'mode', /"l3" or "l2"/);
  v({ v: 1, op: 'cancel', jobId: 'a b' }, 'jobId', /not a job id/);
  v({ v: 1, op: 'cancel', jobId: '' }, 'jobId', /not a job id/);
});

test('extractId: recovers the id of a request that fails later checks', (t) => {
  t.is(extractId('{"v":1,"op":"nope","id":"r9"}'), 'r9');
  t.is(extractId('{"v":2,"id":4}'), 4);
  t.is(extractId('{"id":{}}'), undefined);
  t.is(extractId('not json'), undefined);
});

// ---------------------------------------------------------------- responses

test('okResponse / errorResponse / encodeLine / parseResponse round-trip', (t) => {
  t.deepEqual(okResponse({ jobs: [] }, 3), { v: 1, id: 3, ok: true, result: { jobs: [] } });
  t.deepEqual(okResponse({ version: '1' }), { v: 1, ok: true, result: { version: '1' } });
  const e = errorResponse(new ValidationError('port', 0, 'must be at least 1'), 'x');
  t.deepEqual(e, { v: 1, id: 'x', ok: false, error: { code: 'E_INVALID', message: 'port 0: must be at least 1', details: { field: 'port', value: 0 } } });
  t.deepEqual(errorResponse(new TypeError('boom')).error, { code: 'E_INTERNAL', message: 'internal error: boom' });
  t.deepEqual(errorResponse('weird').error.code, 'E_INTERNAL');
  const l = encodeLine(e);
  t.true(l.endsWith('\n'));
  t.is(l.indexOf('\n'), l.length - 1);
  t.deepEqual(parseResponse(l), e);
  t.deepEqual(parseResponse(encodeLine(okResponse({ a: 1 }))), { v: 1, ok: true, result: { a: 1 } });
});

test('encodeLine refuses lines above the limit; parseResponse checks the envelope', (t) => {
  t.throws(() => encodeLine({ v: 1, op: 'list', id: 'x'.repeat(MAX_LINE_BYTES) }), { message: /limit is 65536/ });
  t.notThrows(() => encodeLine({ v: 1, ok: true, result: 'x'.repeat(MAX_LINE_BYTES) }, 1 << 20));
  t.throws(() => parseResponse('{"v":1}'), { message: /boolean "ok"/ });
  t.throws(() => parseResponse('{"v":1,"ok":true}'), { message: /no "result"/ });
  t.throws(() => parseResponse('{"v":1,"ok":false,"error":"x"}'), { message: /"code","message"/ });
  t.throws(() => parseResponse('{"v":3,"ok":true,"result":1}'), { message: /version 3/ });
});

test('values nested too deeply for JSON.stringify get their own error code, a short message, and an encodable response', (t) => {
  // Found by the control fuzzer: these used to escape as RangeError ("Maximum call stack size
  // exceeded") and reach the client as E_INTERNAL.
  const deep = '['.repeat(20000) + ']'.repeat(20000);
  const wrap = (json: string): string => JSON.stringify({ ...create }).replace('"op":"create"', `"op":"create","mode":${json}`);
  const cases: [string, string, RegExp][] = [
    [wrap(deep), 'E_INVALID', /^mode \[{7}…\]{7}: must be "l3" or "l2"$/],
    [JSON.stringify(create).replace('"ids-1"', deep), 'E_USAGE', /"engid" must be a string, not an array/],
    [JSON.stringify({ ...create, port: 0 }).replace('"port":0', `"port":${deep}`), 'E_USAGE', /"port" must be a number/],
    [`{"v":${deep},"op":"list"}`, 'E_PROTOCOL', /protocol version \[{7}…\]{7};/],
    [`{"v":1,"op":${'{"":'.repeat(12000)}{}${'}'.repeat(12000)}}`, 'E_USAGE', /unknown op (\{"":){6}\{…\}{7};/],
  ];
  for (const [l, code, msg] of cases) {
    const err = protoErr(t, l, code, msg);
    const resp = errorResponse(err, 1);
    const out = encodeLine(resp);
    t.true(out.length < 1000, `${out.length} bytes`);
    t.is(JSON.parse(out).error.code, code);
  }
  t.is(showValue([80]), '[80]');
  t.is(showValue({ a: [1, 'x'], b: null }), '{"a":[1,"x"],"b":null}');
  t.is(showValue(undefined), 'undefined');
  t.is(showValue(Array.from({ length: 1000 }, (_, i) => i)).length, 201);
  // A long value is named, not echoed whole.
  const long = protoErr(t, line({ ...create, engid: 'x'.repeat(60000) }), 'E_INVALID', /^engid "x{199}… \(60002 characters\): is 60000 characters long/);
  t.true(long.message.length < 300);
});

test('showValue: characters a terminal acts on but JSON leaves alone (bidi overrides, zero-width, C1, separators) are shown as escapes; plain text is not touched', (t) => {
  // The attack: an ENGID whose U+202E makes the rest of the error line read backwards on the analyst's terminal.
  const err = t.throws(() => validateEngid(`ok\u202ecod.exe\u200b`), { instanceOf: ValidationError })!;
  t.false(/[\u202e\u200b]/.test(err.message), err.message);
  t.true(err.message.includes('"ok\\u202ecod.exe\\u200b"'), err.message);
  t.is(showValue('a\u0085b\u2028c\u2066d\u{e0041}'), '"a\\u0085b\\u2028c\\u2066d\\u{e0041}"');
  t.is(showValue({ k: 'x\u202e' }), '{"k":"x\\u202e"}');
  // Numbers JSON would turn into null (a config's 1e400 parses as Infinity) are named as they are.
  t.is(showValue(Infinity), 'Infinity');
  t.is(showValue({ a: NaN, b: -Infinity }), '{"a":NaN,"b":-Infinity}');
  // Positive control: letters of any script, and emoji, stay as they are.
  t.is(showValue('café Ωμέγα 東京 🙂'), '"café Ωμέγα 東京 🙂"');
});
