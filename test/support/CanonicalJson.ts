/**
 * What the text walk of canonical JSON (`canonicalJsonCheck`, `takeAsSent`) leaves to a parse
 * even when the value is canonical: for the properties that hold it to taking everything else.
 */

/** Every object key in a JSON value, at any depth. */
const keysOf = (value: unknown): Array<string> =>
  typeof value !== "object" || value === null
    ? []
    : Array.isArray(value)
      ? value.flatMap(keysOf)
      : Object.entries(value).flatMap(([key, child]) => [key, ...keysOf(child)])

/**
 * Whether the JSON of `value` holds what the walk does not judge: a key an object may order
 * otherwise than written (one that starts like an index) or written with escapes (it may equal
 * another written otherwise), or an escaped surrogate.
 */
export const leftToTheParse = (value: unknown): boolean =>
  keysOf(value).some((key) => /^[-\d]/.test(key) || JSON.stringify(key) !== `"${key}"`) ||
  /\\ud[89a-f]/.test(JSON.stringify(value))
