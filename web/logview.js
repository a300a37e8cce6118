// A stage's log of any length: only the lines on screen exist in the page (virtual scrolling with a
// fixed line height), fetched by sequence number in chunks and converted from ANSI as they are
// drawn. Past a few million pixels the scrollbar is scaled, since browsers cap element heights.
//
// A colour holds from the line that sets it to the line that resets it, as in a terminal, so the
// style a line starts with depends on every line before it. Checkpoints keep that cheap: the style
// at the start of each chunk, carried over from the end of the chunk before. A chunk's lines are
// folded once (`starts`, cached per chunk), and a chunk's checkpoint is kept once every chunk
// before it has been read. When a chunk's predecessor has not been read (after a jump into the
// middle of a long log), the run of read chunks it belongs to starts plain, as a guess; the lines
// are drawn again when the guess becomes knowledge. Nothing is fetched just for the styles.
"use strict";

const GantryLogView = (() => {
  const LINE = 20; // px; must match .log-row in app.css
  const CHUNK = 1000; // lines per range request
  const MAX_HEIGHT = 8_000_000; // px, well under every browser's limit
  const KEEP_CHUNKS = 200; // cached chunks (200,000 lines) before the farthest are dropped
  const OVERSCAN = 4;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) node.append(c);
    return node;
  }

  function clock(at) {
    const d = new Date(at);
    if (Number.isNaN(d.getTime())) return "";
    const p = (n, w = 2) => String(n).padStart(w, "0");
    return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
  }

  function newChunk(fetchedAt) {
    return { lines: [], count: 0, starts: null, startsFrom: null, fetching: false, fetchedAt };
  }

  function putLine(chunk, line) {
    const i = (line.seq - 1) % CHUNK;
    if (chunk.lines[i]) return;
    chunk.lines[i] = line;
    chunk.count++;
    // The styles after this line were folded without it.
    if (chunk.starts && chunk.starts.length > i + 1) chunk.starts.length = i + 1;
  }

  function isFull(chunk) {
    return !!chunk && chunk.count === CHUNK;
  }

  // The style at the start of line `i` of `chunk` (i = CHUNK: after its last line) when the chunk
  // starts with `style`; a missing line is taken to change nothing until it arrives.
  function startStyle(chunk, style, i) {
    if (chunk.startsFrom !== style) { chunk.startsFrom = style; chunk.starts = [style]; }
    const starts = chunk.starts;
    while (starts.length <= i) {
      const j = starts.length - 1;
      const line = chunk.lines[j];
      starts.push(line ? GantryAnsi.endStyle(line.text, starts[j]) : starts[j]);
    }
    return starts[i];
  }

  class LogView {
    // options: { fetchRange(from, to) -> Promise<{total, lines}>, search(q) -> Promise<{matches,
    // truncated}>, rawUrl, anchor(seq) -> "stage-x-L12", onFollow(bool) }
    constructor(options) {
      this.o = options;
      this.total = 0;
      this.chunks = new Map(); // chunk index -> { lines: [], count, starts, fetching, fetchedAt }
      this.checkpoints = new Map(); // chunk index -> style at its start, once known
      this.following = false;
      this.highlight = null; // seq
      this.needle = "";
      this.matches = [];
      this.matchIndex = -1;
      this.rows = [];
      this.frame = 0;
      this.ignoreScroll = false;
      this.firstPaint = false;
      this.build();
    }

    build() {
      this.counter = el("span", { class: "log-count", "aria-live": "polite" });
      this.searchBox = el("input", {
        type: "search", class: "log-search", placeholder: "Search log  /", "aria-label": "Search the log",
        onkeydown: (e) => {
          if (e.key === "Enter") { e.preventDefault(); this.runSearch(e.shiftKey ? -1 : 1); }
          if (e.key === "Escape") { this.searchBox.value = ""; this.runSearch(0); this.scroller.focus(); }
        },
      });
      this.matchLabel = el("span", { class: "log-matches", "aria-live": "polite" });
      this.followButton = el("button", {
        type: "button", class: "btn small", "data-action": "follow", "aria-pressed": "false",
        title: "Follow the end of the log (End)", onclick: () => this.setFollowing(!this.following, true),
      }, "Follow");
      this.timesBox = el("input", { type: "checkbox", onchange: () => this.root.classList.toggle("show-times", this.timesBox.checked) });
      this.rawLink = el("a", { class: "btn small", href: this.o.rawUrl, download: "" }, "Download raw");
      const toolbar = el("div", { class: "log-toolbar" },
        el("div", { class: "log-find" },
          this.searchBox,
          el("button", { type: "button", class: "btn small", "aria-label": "Previous match", title: "Previous match (Shift+Enter)", onclick: () => this.runSearch(-1) }, "↑"),
          el("button", { type: "button", class: "btn small", "aria-label": "Next match", title: "Next match (Enter)", onclick: () => this.runSearch(1) }, "↓"),
          this.matchLabel),
        el("div", { class: "log-tools" },
          el("label", { class: "check" }, this.timesBox, " Timestamps"),
          el("button", { type: "button", class: "btn small", "data-action": "start", title: "First line (Home)", onclick: () => this.jumpTo(1) }, "Top"),
          el("button", { type: "button", class: "btn small", "data-action": "end", title: "Last line (End)", onclick: () => this.jumpToEnd() }, "End"),
          this.followButton, this.rawLink, this.counter));
      this.spacer = el("div", { class: "log-spacer" });
      this.body = el("div", { class: "log-rows" });
      this.scroller = el("div", { class: "log-scroll", tabindex: "0", role: "log", "aria-label": "Stage log" }, this.spacer, this.body);
      this.root = el("div", { class: "log" }, toolbar, this.scroller);
      this.scroller.addEventListener("scroll", () => this.onScroll(), { passive: true });
      this.scroller.addEventListener("keydown", (e) => {
        if (e.key === "End") { e.preventDefault(); this.jumpToEnd(); }
        if (e.key === "Home") { e.preventDefault(); this.jumpTo(1); }
      });
      this.resizeObserver = new ResizeObserver(() => { this.layout(); this.schedule(); });
      this.resizeObserver.observe(this.scroller);
    }

    destroy() {
      this.resizeObserver.disconnect();
      cancelAnimationFrame(this.frame);
      this.destroyed = true;
    }

    // Geometry: the first line on screen (fractional) follows from scrollTop, also when scaled.
    viewLines() { return Math.max(1, this.scroller.clientHeight / LINE); }
    maxScroll() { return Math.max(0, this.spacerHeight - this.scroller.clientHeight); }
    topLine() {
      const max = this.maxScroll();
      const lines = Math.max(0, this.total - this.viewLines());
      return max > 0 ? (this.scroller.scrollTop / max) * lines : 0;
    }
    scrollTopFor(line) {
      const lines = Math.max(0, this.total - this.viewLines());
      return lines > 0 ? (Math.min(line, lines) / lines) * this.maxScroll() : 0;
    }
    atBottom() { return this.scroller.scrollTop >= this.maxScroll() - 2; }

    layout() {
      // Room for a horizontal scrollbar under the last line.
      this.spacerHeight = Math.min(this.total * LINE + 16, MAX_HEIGHT);
      this.spacer.style.height = this.spacerHeight + "px";
      const needed = Math.ceil(this.viewLines()) + 2 * OVERSCAN + 1;
      while (this.rows.length < needed) {
        const ln = el("a", { class: "ln" });
        const ts = el("span", { class: "ts" });
        const tx = el("span", { class: "tx" });
        const row = el("div", { class: "log-row" }, ln, ts, tx);
        row._seq = 0;
        this.body.appendChild(row);
        this.rows.push({ row, ln, ts, tx });
      }
      while (this.rows.length > needed) this.rows.pop().row.remove();
      for (const r of this.rows) r.row._seq = 0;
    }

    setTotal(total) {
      if (total <= this.total) return;
      // With a scaled scrollbar the same scrollTop means another line once the log grows:
      // keep the reader's place.
      const keep = !this.following && this.total * LINE > MAX_HEIGHT ? this.topLine() : null;
      this.total = total;
      this.counter.textContent = `${total.toLocaleString()} lines`;
      this.root.style.setProperty("--ln-width", `${String(total).length + 2}ch`);
      this.layout();
      if (this.following) this.scrollToBottom();
      else if (keep !== null) this.setScrollTop(this.scrollTopFor(keep));
      this.schedule();
    }

    setScrollTop(top) {
      if (Math.abs(this.scroller.scrollTop - top) > 0.5) {
        this.ignoreScroll = true;
        this.scroller.scrollTop = top;
      }
    }

    // Lines that arrived live, in order; the stream may skip lines (tail mode), which are
    // fetched like any other missing line once they are on screen.
    append(lines) {
      for (const line of lines) {
        const k = Math.floor((line.seq - 1) / CHUNK);
        let chunk = this.chunks.get(k);
        if (!chunk) {
          chunk = newChunk(performance.now());
          this.chunks.set(k, chunk);
        }
        putLine(chunk, line);
      }
      const last = lines[lines.length - 1];
      if (last) this.setTotal(last.seq);
      this.schedule();
    }

    lineAt(seq) {
      const chunk = this.chunks.get(Math.floor((seq - 1) / CHUNK));
      return chunk ? chunk.lines[(seq - 1) % CHUNK] : undefined;
    }

    // The style line `seq` starts with (its chunk must be there).
    styleAt(seq) {
      const k = Math.floor((seq - 1) / CHUNK);
      return startStyle(this.chunks.get(k), this.chunkStyle(k), (seq - 1) % CHUNK);
    }

    // The style chunk `k` starts with: its checkpoint, or carried over from the nearest one
    // through the full chunks before it, or plain (a guess) if the chunk before is missing.
    chunkStyle(k) {
      let from = k;
      while (from > 0 && !this.checkpoints.has(from) && isFull(this.chunks.get(from - 1))) from--;
      const known = from === 0 || this.checkpoints.has(from);
      let style = this.checkpoints.get(from) || GantryAnsi.EMPTY_STYLE;
      for (let m = from; m < k; m++) {
        style = startStyle(this.chunks.get(m), style, CHUNK);
        if (known) this.checkpoints.set(m + 1, style);
      }
      return style;
    }

    // Makes sure the chunks of lines [from, to] are (being) fetched.
    want(from, to) {
      for (let k = Math.floor((from - 1) / CHUNK); k <= Math.floor((to - 1) / CHUNK); k++) {
        let chunk = this.chunks.get(k);
        const end = Math.min(this.total, (k + 1) * CHUNK);
        const complete = chunk && (() => { for (let s = Math.max(from, k * CHUNK + 1); s <= Math.min(to, end); s++) if (!chunk.lines[(s - 1) % CHUNK]) return false; return true; })();
        if (complete || (chunk && chunk.fetching)) continue;
        if (chunk && performance.now() - chunk.fetchedAt < 300) continue;
        if (!chunk) { chunk = newChunk(0); this.chunks.set(k, chunk); }
        this.fetchChunk(k, chunk);
      }
      this.evict(from);
    }

    async fetchChunk(k, chunk) {
      chunk.fetching = true;
      try {
        const page = await this.o.fetchRange(k * CHUNK + 1, (k + 1) * CHUNK);
        for (const line of page.lines) putLine(chunk, line);
        chunk.fetchedAt = performance.now();
        if (page.total > this.total) this.setTotal(page.total);
      } catch (e) {
        chunk.fetchedAt = performance.now() + 2000; // back off
      } finally {
        chunk.fetching = false;
      }
      if (!this.destroyed) this.schedule();
    }

    evict(near) {
      if (this.chunks.size <= KEEP_CHUNKS) return;
      const here = Math.floor((near - 1) / CHUNK);
      const tail = Math.floor((this.total - 1) / CHUNK);
      const order = [...this.chunks.keys()].filter((k) => k !== tail)
        .sort((a, b) => Math.abs(b - here) - Math.abs(a - here));
      for (const k of order.slice(0, this.chunks.size - KEEP_CHUNKS)) this.chunks.delete(k);
    }

    onScroll() {
      if (this.ignoreScroll) { this.ignoreScroll = false; }
      else if (this.following !== this.atBottom()) this.setFollowing(this.atBottom(), false);
      this.schedule();
    }

    setFollowing(on, jump) {
      this.following = on;
      this.followButton.setAttribute("aria-pressed", String(on));
      this.followButton.classList.toggle("on", on);
      if (on && jump) this.scrollToBottom();
      if (this.o.onFollow) this.o.onFollow(on);
    }

    scrollToBottom() {
      this.setScrollTop(this.maxScroll());
    }

    jumpToEnd() {
      this.setFollowing(true, true);
      this.schedule();
    }

    // Shows line `seq` a third of the way down (unless it is on screen already), optionally
    // highlighted (permalinks, search).
    jumpTo(seq, highlight) {
      if (highlight) this.highlight = seq;
      this.setFollowing(false, false);
      const top = this.topLine();
      const visible = this.rows.length > 0 && seq - 1 >= top && seq <= top + this.viewLines();
      if (!visible) this.setScrollTop(this.scrollTopFor(Math.max(0, seq - 1 - Math.floor(this.viewLines() / 3))));
      this.schedule();
    }

    schedule() {
      if (this.frame || this.destroyed) return;
      this.frame = requestAnimationFrame(() => { this.frame = 0; this.render(); });
    }

    render() {
      const top = this.topLine();
      const first = Math.floor(top);
      const from = Math.max(1, first + 1 - OVERSCAN);
      const to = Math.min(this.total, from + this.rows.length - 1);
      // Rows sit where their lines are, relative to the scrolled viewport.
      const offset = this.scroller.scrollTop - (top - (from - 1)) * LINE;
      this.body.style.transform = `translateY(${offset}px)`;
      if (this.total > 0) this.want(from, to);
      let complete = this.total > 0;
      this.rows.forEach((r, i) => {
        const seq = from + i;
        if (seq > to) { r.row.hidden = true; r.row._seq = 0; return; }
        r.row.hidden = false;
        const line = this.lineAt(seq);
        const style = line ? this.styleAt(seq) : null;
        const key = line ? `${seq}|${this.needle}|${this.highlight === seq}|${JSON.stringify(style)}` : `${seq}|loading`;
        if (!line) complete = false;
        if (r.row._key === key) return;
        r.row._key = key;
        r.row._seq = seq;
        const anchor = this.o.anchor(seq);
        r.ln.textContent = String(seq);
        r.ln.href = "#" + anchor;
        r.row.id = anchor;
        r.row.classList.toggle("hl", this.highlight === seq);
        r.row.classList.toggle("loading", !line);
        r.row.classList.toggle("err", !!line && line.stream === "stderr");
        r.row.classList.toggle("sys", !!line && line.stream === "system");
        r.ts.textContent = line ? clock(line.at) : "";
        r.tx.replaceChildren(line ? GantryAnsi.toFragment(line.text, this.needle, style) : "");
      });
      if (complete && !this.firstPaint) {
        this.firstPaint = true;
        performance.mark("gantry-log-first-screen");
      }
      this.root.dataset.complete = complete ? "true" : "false";
    }

    async runSearch(step) {
      const q = this.searchBox.value.trim().toLowerCase();
      if (q !== this.needle) {
        this.needle = q;
        this.matches = [];
        this.matchIndex = -1;
        for (const r of this.rows) r.row._key = "";
        if (!q) { this.matchLabel.textContent = ""; this.schedule(); return; }
        this.matchLabel.textContent = "searching…";
        try {
          const found = await this.o.search(q);
          if (this.needle !== q) return;
          this.matches = found.matches;
          this.truncated = found.truncated;
        } catch (e) {
          this.matchLabel.textContent = "search failed";
          return;
        }
        if (step === 0) step = 1;
      }
      if (this.matches.length === 0) {
        this.matchLabel.textContent = q ? "no matches" : "";
        this.schedule();
        return;
      }
      if (step !== 0) {
        const n = this.matches.length;
        this.matchIndex = this.matchIndex < 0 ? (step > 0 ? 0 : n - 1) : (this.matchIndex + step + n) % n;
        this.jumpTo(this.matches[this.matchIndex], true);
      }
      this.matchLabel.textContent = `${this.matchIndex + 1} / ${this.matches.length}${this.truncated ? "+" : ""}`;
    }
  }

  return { LogView, LINE, CHUNK };
})();
