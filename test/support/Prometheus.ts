/**
 * A strict reader of the Prometheus text exposition format (version 0.0.4), for tests of what
 * `GET /metrics` serves. Every line must be a sample, a `# HELP` or `# TYPE` line, another
 * comment, or empty; anything else throws, naming the line. It also checks what the format
 * requires across lines: one `# TYPE` per family, before its samples; a family's lines in one
 * group; no series twice; histograms with ascending `le` buckets, cumulative counts, a `+Inf`
 * bucket equal to `_count`, and a `_sum`.
 */

export type MetricType = "counter" | "gauge" | "histogram" | "summary" | "untyped"

export interface Sample {
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly value: number
}

export interface Family {
  readonly name: string
  readonly type: MetricType
  readonly help: string | undefined
  readonly samples: ReadonlyArray<Sample>
}

const metricName = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const types = new Set<string>(["counter", "gauge", "histogram", "summary", "untyped"])
/** A value as Go's ParseFloat reads it (what Prometheus uses), plus the format's +Inf/-Inf/NaN. */
const floatText = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$|^[+-]?Inf$|^NaN$/

class Cursor {
  index = 0
  constructor(
    readonly text: string,
    readonly line: number
  ) {}
  fail(what: string): never {
    throw new Error(`line ${this.line}: ${what} at column ${this.index + 1}: ${JSON.stringify(this.text)}`)
  }
  peek() {
    return this.text[this.index]
  }
  take(pattern: RegExp, what: string): string {
    const match = pattern.exec(this.text.slice(this.index))
    if (match === null || match.index !== 0) this.fail(`expected ${what}`)
    this.index += match[0].length
    return match[0]
  }
  expect(char: string) {
    if (this.text[this.index] !== char) this.fail(`expected '${char}'`)
    this.index++
  }
}

const parseLabelValue = (cursor: Cursor): string => {
  cursor.expect('"')
  let value = ""
  while (true) {
    const char = cursor.peek()
    if (char === undefined) cursor.fail("unterminated label value")
    cursor.index++
    if (char === '"') return value
    if (char === "\\") {
      const escaped = cursor.peek()
      cursor.index++
      if (escaped === "\\") value += "\\"
      else if (escaped === '"') value += '"'
      else if (escaped === "n") value += "\n"
      else cursor.fail(`invalid escape '\\${escaped}' in a label value`)
    } else {
      value += char
    }
  }
}

const parseSample = (text: string, line: number): Sample => {
  const cursor = new Cursor(text, line)
  const name = cursor.take(/[a-zA-Z_:][a-zA-Z0-9_:]*/, "a metric name")
  const labels: Record<string, string> = {}
  if (cursor.peek() === "{") {
    cursor.index++
    while (cursor.peek() !== "}") {
      const label = cursor.take(/[a-zA-Z_][a-zA-Z0-9_]*/, "a label name")
      if (label.startsWith("__")) cursor.fail(`label name ${label} is reserved`)
      if (label in labels) cursor.fail(`label ${label} given twice`)
      cursor.expect("=")
      labels[label] = parseLabelValue(cursor)
      if (cursor.peek() === ",") cursor.index++
      else if (cursor.peek() !== "}") cursor.fail("expected ',' or '}'")
    }
    cursor.index++
  }
  cursor.take(/[ \t]+/, "a blank before the value")
  const valueText = cursor.take(/\S+/, "a value")
  if (!floatText.test(valueText)) cursor.fail(`invalid value '${valueText}'`)
  if (cursor.index < text.length) {
    cursor.take(/[ \t]+/, "a blank before the timestamp")
    cursor.take(/-?\d+/, "a timestamp (integer milliseconds)")
    if (cursor.index < text.length) cursor.fail("unexpected text after the sample")
  }
  const value = valueText.endsWith("Inf") ? (valueText.startsWith("-") ? -Infinity : Infinity) : Number(valueText)
  return { name, labels, value }
}

/** A docstring with its escapes (`\\\\` and `\\n`, the only ones allowed) read. */
const unescapeHelp = (text: string, where: string): string => {
  let out = ""
  for (let i = 0; i < text.length; i++) {
    if (text[i] !== "\\") {
      out += text[i]
      continue
    }
    const escaped = text[++i]
    if (escaped === "\\") out += "\\"
    else if (escaped === "n") out += "\n"
    else throw new Error(`${where}: invalid escape '\\${escaped ?? ""}'`)
  }
  return out
}

/** The family a sample belongs to: histograms' and summaries' samples carry a suffix. */
const familyOf = (sample: string, declared: ReadonlyMap<string, { type: MetricType }>): string => {
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (!sample.endsWith(suffix)) continue
    const base = sample.slice(0, -suffix.length)
    const type = declared.get(base)?.type
    if (type === "histogram" || (type === "summary" && suffix !== "_bucket")) return base
  }
  return sample
}

const seriesKey = (sample: Sample) =>
  `${sample.name}{${Object.keys(sample.labels)
    .sort()
    .map((k) => `${k}=${JSON.stringify(sample.labels[k])}`)
    .join(",")}}`

const checkHistogram = (family: Family) => {
  const withoutLe = (labels: Readonly<Record<string, string>>) => {
    const { le: _le, ...rest } = labels
    return JSON.stringify(Object.entries(rest).sort())
  }
  const series = new Map<string, { buckets: Array<[number, number]>; sum?: number; count?: number }>()
  for (const sample of family.samples) {
    const key = withoutLe(sample.labels)
    const entry = series.get(key) ?? { buckets: [] }
    series.set(key, entry)
    if (sample.name === `${family.name}_bucket`) {
      const le = sample.labels["le"]
      if (le === undefined || !floatText.test(le)) throw new Error(`${family.name}: a bucket without a valid le label`)
      entry.buckets.push([le === "+Inf" ? Infinity : Number(le), sample.value])
    } else if (sample.name === `${family.name}_sum`) entry.sum = sample.value
    else if (sample.name === `${family.name}_count`) entry.count = sample.value
    else throw new Error(`${family.name}: histogram sample ${sample.name} is not _bucket, _sum or _count`)
  }
  for (const [labels, { buckets, count, sum }] of series) {
    const where = `${family.name}${labels}`
    if (count === undefined || sum === undefined) throw new Error(`${where}: histogram without _count or _sum`)
    for (let i = 1; i < buckets.length; i++) {
      if (!(buckets[i]![0] > buckets[i - 1]![0])) throw new Error(`${where}: le bounds not ascending`)
      if (buckets[i]![1] < buckets[i - 1]![1]) throw new Error(`${where}: bucket counts not cumulative`)
    }
    const last = buckets.at(-1)
    if (last === undefined || last[0] !== Infinity) throw new Error(`${where}: no le="+Inf" bucket`)
    if (last[1] !== count) throw new Error(`${where}: the +Inf bucket (${last[1]}) is not _count (${count})`)
  }
}

/** Parses an exposition; throws on the first line or family that breaks the format. */
export const parse = (text: string): Map<string, Family> => {
  const families = new Map<string, { name: string; type: MetricType; help: string | undefined; samples: Sample[] }>()
  const declared = new Map<string, { type: MetricType }>()
  const closed = new Set<string>()
  const seen = new Set<string>()
  let current: string | undefined
  const family = (name: string) => {
    let entry = families.get(name)
    if (entry === undefined) {
      entry = { name, type: declared.get(name)?.type ?? "untyped", help: undefined, samples: [] }
      families.set(name, entry)
    }
    return entry
  }
  const enter = (name: string, line: number) => {
    if (current === name) return
    if (closed.has(name)) throw new Error(`line ${line}: the lines of ${name} are not in one group`)
    if (current !== undefined) closed.add(current)
    current = name
  }
  const lines = text.split("\n")
  if (lines.at(-1) === "") lines.pop()
  lines.forEach((raw, i) => {
    const line = i + 1
    if (raw.trim() === "") return
    if (raw.startsWith("#")) {
      const match = /^#[ \t]+(HELP|TYPE)[ \t]+(\S+)(?:[ \t]+(.*))?$/.exec(raw)
      if (match === null) return // any other comment
      const [, keyword, name, rest] = match as unknown as [string, "HELP" | "TYPE", string, string | undefined]
      if (!metricName.test(name)) throw new Error(`line ${line}: invalid metric name '${name}'`)
      enter(name, line)
      if (keyword === "HELP") {
        if (family(name).help !== undefined) throw new Error(`line ${line}: second HELP for ${name}`)
        family(name).help = unescapeHelp(rest ?? "", `line ${line}: the HELP of ${name}`)
      } else {
        if (rest === undefined || !types.has(rest.trim())) throw new Error(`line ${line}: invalid TYPE '${rest}'`)
        if (declared.has(name)) throw new Error(`line ${line}: second TYPE for ${name}`)
        if (family(name).samples.length > 0) throw new Error(`line ${line}: TYPE of ${name} after its samples`)
        declared.set(name, { type: rest.trim() as MetricType })
        family(name).type = rest.trim() as MetricType
      }
      return
    }
    const sample = parseSample(raw, line)
    const name = familyOf(sample.name, declared)
    enter(name, line)
    const key = seriesKey(sample)
    if (seen.has(key)) throw new Error(`line ${line}: series ${key} given twice`)
    seen.add(key)
    family(name).samples.push(sample)
  })
  for (const entry of families.values()) if (entry.type === "histogram") checkHistogram(entry)
  return families
}

/** The value of the one sample named `name` whose labels include `labels`; throws when none or several match. */
export const valueOf = (
  families: ReadonlyMap<string, Family>,
  name: string,
  labels: Record<string, string>
): number => {
  const matches = [...families.values()]
    .flatMap((family) => family.samples)
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
  if (matches.length !== 1) {
    throw new Error(`${matches.length} samples of ${name} with ${JSON.stringify(labels)}, expected exactly one`)
  }
  return matches[0]!.value
}
