// A dotenv parser, read as python-dotenv (and `coffer secret import`) reads files: comments,
// `export`, single quotes (literal), double quotes (with \n, \t, \", \\ escapes) and quoted
// values that span lines. Returns [{name, value}]; throws on a line it cannot read (the
// message names the line number, never its content).

export function parseDotenv(text) {
  const entries = [];
  const src = text.replace(/\r\n?/g, "\n").replace(/^\uFEFF/, "");
  let i = 0;
  let line = 1;
  const fail = (why) => { throw new Error(`line ${line}: ${why}`); };
  while (i < src.length) {
    // Skip blank lines and comments.
    const rest = src.slice(i);
    const blank = /^[ \t]*(#[^\n]*)?(\n|$)/.exec(rest);
    if (blank && blank[0].length) {
      i += blank[0].length;
      if (blank[2] === "\n") line += 1;
      continue;
    }
    const head = /^[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_.-]*)[ \t]*(=?)[ \t]*/.exec(rest);
    if (!head) fail("expected NAME=value");
    const name = head[1];
    i += head[0].length;
    if (!head[2]) {
      // A bare name: python-dotenv reads it as no value; nothing to import.
      const end = src.indexOf("\n", i);
      if (src.slice(i, end < 0 ? undefined : end).trim() && !src.slice(i).trimStart().startsWith("#")) fail("expected =");
      i = end < 0 ? src.length : end + 1;
      line += 1;
      continue;
    }
    let value;
    const quote = src[i];
    if (quote === "'" || quote === '"') {
      let j = i + 1;
      let out = "";
      for (;;) {
        if (j >= src.length) fail(`unterminated ${quote} quote`);
        const c = src[j];
        if (c === quote) break;
        if (c === "\n") line += 1;
        if (c === "\\" && quote === '"' && j + 1 < src.length) {
          const n = src[j + 1];
          const map = { n: "\n", t: "\t", r: "\r", '"': '"', "\\": "\\", "'": "'" };
          if (n in map) { out += map[n]; j += 2; continue; }
        }
        if (c === "\\" && quote === "'" && (src[j + 1] === "'" || src[j + 1] === "\\")) {
          out += src[j + 1]; j += 2; continue;
        }
        out += c;
        j += 1;
      }
      value = out;
      i = j + 1;
      const tail = /^[ \t]*(#[^\n]*)?(\n|$)/.exec(src.slice(i));
      if (!tail) fail("text after the closing quote");
      i += tail[0].length;
      if (tail[2] === "\n") line += 1;
    } else {
      const end = src.indexOf("\n", i);
      let raw = src.slice(i, end < 0 ? undefined : end);
      raw = raw.replace(/(^|[ \t]+)#.*$/, "");
      value = raw.trim();
      i = end < 0 ? src.length : end + 1;
      line += 1;
    }
    const seen = entries.findIndex((e) => e.name === name);
    if (seen >= 0) entries.splice(seen, 1); // the last one wins, as python-dotenv reads it
    entries.push({ name, value });
  }
  return entries;
}
