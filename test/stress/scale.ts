/**
 * Scale knob shared by the stress suite. `make test` runs it short (fast,
 * same assertions, smaller figures); `make stress` sets STRESS_SCALE=full for
 * the figures the spec names (>= 100,000 frames, thousands of connections).
 */
export type Scale = 'short' | 'full';

function readScale(): Scale {
  const v = (process.env.STRESS_SCALE ?? 'short').trim().toLowerCase();
  if (v === '' || v === 'short') return 'short';
  if (v === 'full') return 'full';
  throw new Error(`STRESS_SCALE must be "short" or "full", not ${JSON.stringify(process.env.STRESS_SCALE)}`);
}

export const SCALE: Scale = readScale();

/** The short figure in `make test`, the full one in `make stress`. */
export function scaled<T>(short: T, full: T): T {
  return SCALE === 'full' ? full : short;
}
