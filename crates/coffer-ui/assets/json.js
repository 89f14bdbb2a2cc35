// JSON typed into the dashboard, checked before it is sent: where it breaks (line and
// column) and why, without the engine's message, which may quote the text. `quote: false`
// keeps even the offending character out of the message (for text that may hold a value,
// such as an orchestration's encrypted params).

/**
 * JSON.parse, and where it fails: {ok: true, value} or {ok: false, message, position}.
 * Engines do not all say where (V8 now often quotes the text instead of a position), so
 * on a failure a small scanner below walks the text by JSON's grammar to find the place.
 */
export function parseJson(text, { quote = true } = {}) {
  if (!text.trim()) {
    return { ok: false, message: "Empty: write a JSON value (an object, array, string, number, true, false or null).", position: 0 };
  }
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (e) {
    const found = locateJsonError(text, quote);
    const position = found ? found.position : null;
    let where = "";
    if (position != null) {
      const lines = text.slice(0, position).split("\n");
      where = ` at line ${lines.length}, column ${lines[lines.length - 1].length + 1}`;
    }
    // Never the engine's message: it may quote the text, which can be a value being typed.
    const reason = found ? found.reason : "it does not follow JSON's grammar";
    return { ok: false, message: `Not valid JSON${where}: ${reason}.`, position };
  }
}

/** The first place `text` breaks JSON's grammar: {position, reason}, or null if none is found. */
function locateJsonError(text, quote) {
  let i = 0;
  const fail = (reason, at = i) => { throw { position: at, reason }; };
  const space = () => { while (i < text.length && " \t\n\r".includes(text[i])) i += 1; };
  const describeHere = () => {
    if (i >= text.length) return "the text ends";
    return quote ? `unexpected ${JSON.stringify(text[i])}` : "an unexpected character";
  };
  function value() {
    space();
    const c = text[i];
    if (c === "{") return object();
    if (c === "[") return array();
    if (c === "\"") return string();
    if (c === "-" || (c >= "0" && c <= "9")) return number();
    for (const word of ["true", "false", "null"]) {
      if (text.startsWith(word, i)) { i += word.length; return; }
    }
    if (c === "]" || c === "}") fail(`a trailing comma, or a missing value, before "${c}"`);
    fail(`${describeHere()} where a value should be`);
  }
  function object() {
    i += 1;
    space();
    if (text[i] === "}") { i += 1; return; }
    for (;;) {
      space();
      if (text[i] === "}") fail("a trailing comma before \"}\"");
      if (text[i] !== "\"") fail(`${describeHere()} where a key in double quotes should be`);
      string();
      space();
      if (text[i] !== ":") fail(`${describeHere()} where ":" should be`);
      i += 1;
      value();
      space();
      if (text[i] === ",") { i += 1; continue; }
      if (text[i] === "}") { i += 1; return; }
      fail(`${describeHere()} where "," or "}" should be`);
    }
  }
  function array() {
    i += 1;
    space();
    if (text[i] === "]") { i += 1; return; }
    for (;;) {
      value();
      space();
      if (text[i] === ",") { i += 1; continue; }
      if (text[i] === "]") { i += 1; return; }
      fail(`${describeHere()} where "," or "]" should be`);
    }
  }
  function string() {
    const start = i;
    i += 1;
    while (i < text.length && text[i] !== "\"") {
      const c = text.charCodeAt(i);
      if (c < 0x20) fail("a control character (a raw line break or tab?) inside a string: write it as \\n or \\t");
      if (text[i] === "\\") {
        const next = text[i + 1];
        if (next === "u") {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) fail("\\u must be followed by 4 hex digits");
          i += 6;
          continue;
        }
        if (next === undefined || !"\"\\/bfnrt".includes(next)) fail("an escape that JSON does not have");
        i += 2;
        continue;
      }
      i += 1;
    }
    if (i >= text.length) fail("a string that is not closed", start);
    i += 1;
  }
  function number() {
    const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i));
    if (!m) fail("a malformed number");
    i += m[0].length;
  }
  try {
    value();
    space();
    if (i < text.length) fail(`${describeHere()} after the value (one JSON value only)`);
    return null;
  } catch (e) {
    if (e && typeof e.position === "number") return e;
    return null;
  }
}
