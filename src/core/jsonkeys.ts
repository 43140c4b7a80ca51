/**
 * Duplicate object keys in JSON text. JSON.parse keeps the last of two equal
 * keys and says nothing (RFC 8259 §4 only says names SHOULD be unique; I-JSON,
 * RFC 7493 §2.3, forbids them), so a config file with "protected" written
 * twice would silently lose the first list of protected hosts. The daemon
 * refuses such input instead (config.ts, control/protocol.ts).
 *
 * One pass over the text, no tokens kept: a Set of keys per open object,
 * and the path (keys and array indexes) of the open containers. It must run
 * only on text JSON.parse has accepted: it does not validate, it only tracks
 * strings, braces, brackets and commas. Keys are compared decoded, so "a"
 * and "\u0061" are the same key, as for JSON.parse.
 *
 * Imports nothing: the CLI bundle may carry it (control/protocol.ts).
 */

/** The second occurrence of a key in one object. */
export interface DuplicateKey {
  /** The key, decoded. */
  key: string;
  /** Keys and array indexes from the top-level value to the key itself (the key last). */
  path: (string | number)[];
  /** UTF-16 offset of the second occurrence's opening quote in the text. */
  offset: number;
  /** UTF-16 offset of the first occurrence's opening quote. */
  firstOffset: number;
}

interface Frame {
  /** null: an array. */
  keys: Map<string, number> | null;
  /** The current member's key (object) or index (array): the path segment of a child container. */
  at: string | number;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const LBRACE = 0x7b;
const RBRACE = 0x7d;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;
const COMMA = 0x2c;

/**
 * The first duplicated key in `text` (in text order of the second
 * occurrence), or undefined. `text` must be valid JSON (JSON.parse accepted
 * it); for other text the answer is unspecified but the call still ends and
 * does not throw. `ignore(key)` true: that key may repeat (config comments).
 * Cost: linear in the text; no allocation for text without objects.
 */
export function findDuplicateKey(text: string, ignore?: (key: string) => boolean): DuplicateKey | undefined {
  const stack: Frame[] = [];
  let top: Frame | undefined;
  // In an object, right after '{' or ',': the next string is a key.
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      // The closing quote is the next one after an even run of backslashes. indexOf skips a
      // long string ~4x faster than a charCodeAt loop (65 kB value: 144 -> ~35 us); each
      // backslash is looked at once, by the one quote it precedes.
      const start = i;
      for (;;) {
        i = text.indexOf('"', i + 1);
        if (i === -1) return undefined; // unterminated: not JSON
        let b = i - 1;
        while (b > start && text.charCodeAt(b) === BACKSLASH) b--;
        if ((i - 1 - b) % 2 === 0) break;
      }
      if (!expectKey || top === undefined || top.keys === null) continue;
      expectKey = false;
      let key = text.slice(start + 1, i);
      if (key.includes('\\')) {
        try {
          key = JSON.parse(text.slice(start, i + 1)) as string;
        } catch {
          // not valid JSON after all: compare the raw text
        }
      }
      top.at = key;
      const first = top.keys.get(key);
      if (first !== undefined && !(ignore?.(key) ?? false)) {
        const path: (string | number)[] = [];
        for (let k = 0; k < stack.length - 1; k++) path.push(stack[k].at);
        path.push(key);
        return { key, path, offset: start, firstOffset: first };
      }
      if (first === undefined) top.keys.set(key, start);
    } else if (c === LBRACE) {
      top = { keys: new Map(), at: '' };
      stack.push(top);
      expectKey = true;
    } else if (c === LBRACKET) {
      top = { keys: null, at: 0 };
      stack.push(top);
      expectKey = false;
    } else if (c === COMMA) {
      if (top === undefined) continue;
      if (top.keys === null) (top.at as number)++;
      else expectKey = true;
    } else if (c === RBRACE || c === RBRACKET) {
      stack.pop();
      top = stack[stack.length - 1];
      expectKey = false;
    }
  }
  return undefined;
}

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/**
 * A path as an operator writes it: `tunnelPorts.vxlan`, `sensors[2].protected`;
 * a key that is not an identifier is quoted, `["// note"]`.
 */
export function formatKeyPath(path: readonly (string | number)[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (IDENT.test(seg)) out += out === '' ? seg : `.${seg}`;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

/** "line L column C" (both from 1; columns in UTF-16 code units) of an offset in `text`. */
export function lineColumn(text: string, offset: number): string {
  let line = 1;
  let lineStart = 0;
  for (let i = text.indexOf('\n'); i !== -1 && i < offset; i = text.indexOf('\n', i + 1)) {
    line++;
    lineStart = i + 1;
  }
  return `line ${line} column ${offset - lineStart + 1}`;
}
