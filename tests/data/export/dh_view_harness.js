// Runs DHAT's own viewer code (dh_view.js, shipped with Valgrind) on a DHAT JSON file under
// Node, with a minimal stand-in for the browser DOM, and prints the text the viewer shows.
//
// Usage: node dh_view_harness.js /path/to/dh_view.js FILE.json
// Exit code 0 and the rendered tree on stdout when the viewer accepts the file; an uncaught
// exception (e.g. "data file is missing a field: tg") exits non-zero with its message.
"use strict";
const fs = require("fs");
const vm = require("vm");
const { performance } = require("perf_hooks");

class FakeNode {
  constructor(tag, text) {
    this.tagName = tag;
    this.childNodes = [];
    this.parentNode = null;
    this.className = "";
    this._text = text === undefined ? "" : text;
    const self = this;
    this.classList = {
      contains: (c) => self.className.split(/\s+/).includes(c),
      toggle: (c) => {
        const set = self.className.split(/\s+/).filter((x) => x);
        const i = set.indexOf(c);
        if (i >= 0) set.splice(i, 1); else set.push(c);
        self.className = set.join(" ");
      },
    };
  }
  appendChild(c) { c.parentNode = this; this.childNodes.push(c); return c; }
  replaceChild(n, o) {
    const i = this.childNodes.indexOf(o);
    if (i < 0) throw new Error("replaceChild: not a child");
    this.childNodes[i] = n; n.parentNode = this; o.parentNode = null;
    return o;
  }
  cloneNode() { const n = new FakeNode(this.tagName); n.className = this.className; return n; }
  get nextSibling() {
    const p = this.parentNode; if (!p) return null;
    return p.childNodes[p.childNodes.indexOf(this) + 1] || null;
  }
  get textContent() {
    return this.tagName === "#text" ? this._text : this.childNodes.map((c) => c.textContent).join("");
  }
  set textContent(t) { this.childNodes = []; this.appendChild(new FakeNode("#text", t)); }
  get selectedIndex() { const i = this.childNodes.findIndex((c) => c.selected); return i < 0 ? 0 : i; }
}

const [viewerPath, dataPath] = process.argv.slice(2);
const document = {
  title: "",
  body: new FakeNode("body"),
  location: { search: "" },
  createElement: (tag) => new FakeNode(tag),
  createTextNode: (t) => new FakeNode("#text", t),
};
const context = vm.createContext({
  document, performance, URLSearchParams, console,
  DATA: fs.readFileSync(dataPath, "utf8"),
  OUTPUT: undefined,
});
const driver = `
onLoad();
gFilename = "export.json";
gData = JSON.parse(DATA);
buildTree();
displayTree();
OUTPUT = gMainDiv.textContent;
`;
vm.runInContext(fs.readFileSync(viewerPath, "utf8") + "\n" + driver, context, { filename: viewerPath });
process.stdout.write(context.OUTPUT);
