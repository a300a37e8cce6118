// Terminal output to styled spans: SGR colours (16, 256 and truecolour), bold, dim, italic,
// underline, strike-through and inverse; carriage returns and erase-line collapse progress bars to
// their last state, as a terminal shows them. A style set on one line holds on the next ones until
// it is reset, as in a terminal: `parse` takes the style a line starts with and `endStyle` gives the
// one it leaves. Pure functions, no DOM except `toFragment`.
//
// The server's search draws lines the same way (`shown_text` in
// crates/gantry-store/src/log_search.rs): what the one shows, the other finds. Change them together.
"use strict";

const GantryAnsi = (() => {
  const PLAIN = /^[^\x1b\r\b\t\x00-\x08\x0b-\x1f\x7f]*$/;
  const EMPTY_STYLE = Object.freeze({});
  // The cursor moves right no further than this, or than the text written, if longer: a terminal
  // stops at its right edge, and a line cannot make us allocate much beyond its own length.
  const MAX_CURSOR_COLUMN = 1024;

  // The xterm 256-colour cube and grey ramp; 0-15 come from the theme (CSS classes).
  function color256(n) {
    if (n < 16) return n;
    if (n < 232) {
      const i = n - 16;
      const level = (v) => (v === 0 ? 0 : 55 + v * 40);
      return rgb(level(Math.floor(i / 36)), level(Math.floor(i / 6) % 6), level(i % 6));
    }
    const grey = 8 + (n - 232) * 10;
    return rgb(grey, grey, grey);
  }

  function rgb(r, g, b) {
    const clamp = (v) => Math.max(0, Math.min(255, v | 0));
    return `rgb(${clamp(r)}, ${clamp(g)}, ${clamp(b)})`;
  }

  // Applies one SGR sequence's parameters to a style, returning a new style object.
  function applySgr(style, params) {
    const s = Object.assign({}, style);
    if (params.length === 0) params = [0];
    for (let i = 0; i < params.length; i++) {
      const p = params[i];
      if (p === 0 || Number.isNaN(p)) {
        for (const k of Object.keys(s)) delete s[k];
      } else if (p === 1) s.bold = true;
      else if (p === 2) s.dim = true;
      else if (p === 3) s.italic = true;
      else if (p === 4) s.underline = true;
      else if (p === 7) s.inverse = true;
      else if (p === 9) s.strike = true;
      else if (p === 21 || p === 22) { delete s.bold; delete s.dim; }
      else if (p === 23) delete s.italic;
      else if (p === 24) delete s.underline;
      else if (p === 27) delete s.inverse;
      else if (p === 29) delete s.strike;
      else if (p >= 30 && p <= 37) s.fg = p - 30;
      else if (p === 39) delete s.fg;
      else if (p >= 40 && p <= 47) s.bg = p - 40;
      else if (p === 49) delete s.bg;
      else if (p >= 90 && p <= 97) s.fg = p - 90 + 8;
      else if (p >= 100 && p <= 107) s.bg = p - 100 + 8;
      else if (p === 38 || p === 48) {
        const key = p === 38 ? "fg" : "bg";
        if (params[i + 1] === 5 && i + 2 < params.length) {
          s[key] = color256(params[i + 2] & 255);
          i += 2;
        } else if (params[i + 1] === 2 && i + 4 < params.length) {
          s[key] = rgb(params[i + 2], params[i + 3], params[i + 4]);
          i += 4;
        } else {
          break; // malformed: ignore the rest, as terminals do
        }
      }
    }
    return Object.keys(s).length === 0 ? EMPTY_STYLE : Object.freeze(s);
  }

  // Draws one line, starting in `style`, into cells as a terminal would, and groups them into
  // segments [{text, style}]; returns them with the style in force at the end of the line. `\r`
  // returns to column 0 and later text overwrites; `ESC[K` erases. A cell holds one code point.
  function draw(line, style) {
    if (PLAIN.test(line)) return { segments: line === "" ? [] : [{ text: line, style }], end: style };
    const chars = [];
    const styles = [];
    let col = 0;
    const put = (ch) => {
      while (chars.length < col) { chars.push(" "); styles.push(EMPTY_STYLE); }
      chars[col] = ch;
      styles[col] = style;
      col++;
    };
    const rightEdge = () => Math.max(chars.length, col, MAX_CURSOR_COLUMN);
    for (let i = 0; i < line.length; i++) {
      const c = line.charCodeAt(i);
      if (c === 0x1b) {
        const next = line[i + 1];
        if (next === "[") {
          let j = i + 2;
          while (j < line.length && (line.charCodeAt(j) < 0x40 || line.charCodeAt(j) > 0x7e)) j++;
          const final = line[j];
          const body = line.slice(i + 2, j);
          const nums = body === "" ? [] : body.split(/[;:]/).map((v) => (v === "" ? 0 : parseInt(v, 10)));
          if (final === "m" && !/[?<>=]/.test(body)) style = applySgr(style, nums);
          else if (final === "K") {
            const mode = nums[0] || 0;
            if (mode === 0) { chars.length = Math.min(chars.length, col); styles.length = chars.length; }
            else if (mode === 1) { for (let k = 0; k < Math.min(col + 1, chars.length); k++) { chars[k] = " "; styles[k] = EMPTY_STYLE; } }
            else if (mode === 2) { chars.length = 0; styles.length = 0; }
          } else if (final === "G") col = Math.min(Math.max(0, (nums[0] || 1) - 1), rightEdge());
          else if (final === "C") col = Math.min(col + Math.max(1, nums[0] || 1), rightEdge());
          else if (final === "D") col = Math.max(0, col - Math.max(1, nums[0] || 1));
          i = j;
        } else if (next === "]") {
          // OSC (titles, hyperlinks): skipped up to BEL or ST.
          let j = i + 2;
          while (j < line.length && line[j] !== "\x07" && !(line[j] === "\x1b" && line[j + 1] === "\\")) j++;
          i = line[j] === "\x1b" ? j + 1 : j;
        } else {
          // Other escapes: intermediates in " ".."/" and one final in "0".."~" (`ESC ( B` from
          // `tput sgr0`, `ESC 7`); anything else after ESC is drawn as usual.
          let j = i + 1;
          while (j < line.length && line.charCodeAt(j) >= 0x20 && line.charCodeAt(j) <= 0x2f) j++;
          const f = line.charCodeAt(j);
          i = f >= 0x30 && f <= 0x7e ? j : j - 1;
        }
      } else if (c === 0x0d) {
        col = 0;
      } else if (c === 0x08) {
        col = Math.max(0, col - 1);
      } else if (c === 0x09) {
        const stop = (Math.floor(col / 8) + 1) * 8;
        while (col < stop) put(" ");
      } else if (c < 0x20 || c === 0x7f) {
        // Other control characters draw nothing.
      } else if (c >= 0xd800 && c <= 0xdbff && i + 1 < line.length) {
        put(line.slice(i, i + 2)); // a surrogate pair: one code point, one cell
        i++;
      } else {
        put(line[i]);
      }
    }
    const segments = [];
    for (let k = 0; k < chars.length; k++) {
      const last = segments[segments.length - 1];
      if (last && last.style === styles[k]) last.text += chars[k];
      else segments.push({ text: chars[k], style: styles[k] });
    }
    return { segments, end: style };
  }

  // The segments of one line that starts in `style` (plain by default).
  function parse(line, style = EMPTY_STYLE) {
    return draw(line, style).segments;
  }

  // The style in force after a line that starts in `style`.
  function endStyle(line, style = EMPTY_STYLE) {
    return line.indexOf("\x1b") === -1 ? style : draw(line, style).end;
  }

  // The text a line shows, without escapes.
  function plain(line) {
    return parse(line).map((s) => s.text).join("");
  }

  // Splits segments so that the ranges [start, end) of the shown text are marked.
  function mark(segments, ranges) {
    if (ranges.length === 0) return segments;
    const out = [];
    let pos = 0;
    for (const seg of segments) {
      let offset = 0;
      const end = pos + seg.text.length;
      for (const [a, b] of ranges) {
        if (b <= pos + offset || a >= end) continue;
        const from = Math.max(a, pos + offset) - pos;
        const to = Math.min(b, end) - pos;
        if (from > offset) out.push({ text: seg.text.slice(offset, from), style: seg.style });
        out.push({ text: seg.text.slice(from, to), style: seg.style, mark: true });
        offset = to;
      }
      if (offset < seg.text.length) out.push({ text: seg.text.slice(offset), style: seg.style });
      pos = end;
    }
    return out;
  }

  // Where `needle` (lower case) occurs in `text`, ignoring case.
  function find(text, needle) {
    const ranges = [];
    if (!needle) return ranges;
    const hay = text.toLowerCase();
    let at = hay.indexOf(needle);
    while (at !== -1) {
      ranges.push([at, at + needle.length]);
      at = hay.indexOf(needle, at + needle.length);
    }
    return ranges;
  }

  function applyStyle(el, style) {
    let fg = style.fg;
    let bg = style.bg;
    if (style.inverse) {
      el.classList.add("a-inv");
      [fg, bg] = [bg, fg];
    }
    if (typeof fg === "number") el.classList.add("a-f" + fg);
    else if (typeof fg === "string") el.style.color = fg;
    if (typeof bg === "number") el.classList.add("a-g" + bg);
    else if (typeof bg === "string") el.style.backgroundColor = bg;
    if (style.bold) el.classList.add("a-b");
    if (style.dim) el.classList.add("a-d");
    if (style.italic) el.classList.add("a-i");
    if (style.underline) el.classList.add("a-u");
    if (style.strike) el.classList.add("a-s");
  }

  // A line that starts in `style` as DOM nodes: styled spans, with the search matches in <mark>.
  function toFragment(line, needle, style = EMPTY_STYLE) {
    let segments = parse(line, style);
    if (needle) segments = mark(segments, find(segments.map((s) => s.text).join(""), needle));
    const frag = document.createDocumentFragment();
    for (const seg of segments) {
      if (seg.style === EMPTY_STYLE && !seg.mark) {
        frag.appendChild(document.createTextNode(seg.text));
        continue;
      }
      const el = document.createElement(seg.mark ? "mark" : "span");
      el.textContent = seg.text;
      applyStyle(el, seg.style);
      frag.appendChild(el);
    }
    return frag;
  }

  return { parse, endStyle, plain, mark, find, toFragment, color256, EMPTY_STYLE };
})();
