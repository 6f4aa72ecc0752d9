-- luacheck: no max line length
-- The console's script: plain JavaScript, no framework, no build step. Every piece of
-- data becomes DOM text (textContent), never markup, so nothing a sandbox writes can run
-- in the console's page.
return [==[
"use strict";
(function () {

// ------------------------------------------------------------------ helpers

function h(tag, attrs) {
  var el = document.createElement(tag);
  if (attrs) {
    Object.keys(attrs).forEach(function (k) {
      var v = attrs[k];
      if (v === undefined || v === null || v === false) return;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.slice(0, 2) === "on") el.addEventListener(k.slice(2), v);
      else if (k === "value") el.value = v;
      else el.setAttribute(k, v === true ? "" : v);
    });
  }
  for (var i = 2; i < arguments.length; i++) add(el, arguments[i]);
  return el;
}
function add(el, c) {
  if (c === undefined || c === null || c === false) return;
  if (Array.isArray(c)) { c.forEach(function (x) { add(el, x); }); return; }
  el.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
}
function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }
function $(id) { return document.getElementById(id); }

function api(method, path, body) {
  var opts = { method: method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  return fetch(path, opts).then(function (r) {
    return r.text().then(function (t) {
      var v = null;
      try { v = t ? JSON.parse(t) : null; } catch (e) { v = null; }
      if (!r.ok) {
        var err = new Error((v && v.error && v.error.message) || (r.status + " " + r.statusText));
        err.status = r.status;
        err.hint = v && v.error && v.error.hint;
        err.code = v && v.error && v.error.code;
        if (r.status === 401) location.reload();
        throw err;
      }
      return v;
    });
  });
}

function toast(text, kind, hint) {
  var t = h("div", { class: "toast " + (kind || "") }, text, hint ? h("span", { class: "hint", text: hint }) : null);
  $("toasts").appendChild(t);
  setTimeout(function () { t.remove(); }, kind === "error" ? 9000 : 4500);
}
function fail(e) { toast(e.message || String(e), "error", e.hint); }

function pad(n) { return (n < 10 ? "0" : "") + n; }
function clock(ms) { var d = new Date(ms); return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()); }
function ago(ms) {
  if (!ms) return "";
  var s = Math.max(0, Math.floor((Date.now() - ms) / 1000));
  if (s < 60) return s + "s ago";
  if (s < 3600) return Math.floor(s / 60) + "m ago";
  if (s < 86400) return Math.floor(s / 3600) + "h ago";
  return Math.floor(s / 86400) + "d ago";
}
function dur(ms) {
  if (ms === undefined || ms === null) return "";
  if (ms < 1000) return ms + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  return Math.floor(ms / 60000) + "m" + pad(Math.floor(ms / 1000) % 60) + "s";
}
function badge(state) { return h("span", { class: "badge " + state, text: state }); }

function navigate(path) {
  if (location.pathname + location.hash !== path) history.pushState(null, "", path);
  route();
}
document.addEventListener("click", function (e) {
  var a = e.target.closest && e.target.closest("a[data-nav]");
  if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
  e.preventDefault();
  navigate(a.getAttribute("data-nav"));
});
window.addEventListener("popstate", function () { route(); });

// ------------------------------------------------------------------ live updates

// An EventSource that reconnects with the cursors it has, so nothing arrives twice.
function Live(params, handlers) {
  this.params = params;
  this.handlers = handlers;
  this.cursors = {};
  this.closed = false;
  this.open();
}
Live.prototype.open = function () {
  var self = this;
  var q = [];
  Object.keys(this.params).forEach(function (k) { q.push(k + "=" + encodeURIComponent(self.params[k])); });
  Object.keys(this.cursors).forEach(function (k) { q.push(k + "=" + self.cursors[k]); });
  var es = new EventSource("/api/stream?" + q.join("&"));
  this.es = es;
  es.onopen = function () { $("live").className = "live on"; };
  es.onerror = function () {
    $("live").className = "live off";
    es.close();
    if (!self.closed) self.timer = setTimeout(function () { self.open(); }, 2000);
  };
  Object.keys(this.handlers).forEach(function (name) {
    es.addEventListener(name, function (ev) {
      var v = JSON.parse(ev.data);
      self.track(name, v);
      self.handlers[name](v);
    });
  });
};
Live.prototype.track = function (name, v) {
  var c = this.cursors;
  if (name === "log" && v.id) {
    var n = parseInt(v.id.slice(1), 10), k = v.id[0] === "e" ? "event" : "log";
    if (!c[k] || n > c[k]) c[k] = n;
  } else if ((name === "audit" || name === "chat" || name === "notification") && v.id) {
    var key = name === "notification" ? "note" : name;
    if (!c[key] || v.id > c[key]) c[key] = v.id;
  }
};
Live.prototype.close = function () {
  this.closed = true;
  clearTimeout(this.timer);
  if (this.es) this.es.close();
};

// ------------------------------------------------------------------ the shell

var info = null, settingsCache = null;
var view = null; // the current page: { close() }

function setNav(which) {
  $("nav-fleet").className = which === "fleet" ? "active" : "";
  $("nav-settings").className = which === "settings" ? "active" : "";
}

function route() {
  if (view && view.close) view.close();
  view = null;
  var main = clear($("main"));
  main.className = "";
  var p = location.pathname;
  var m = p.match(/^\/sandbox\/([^\/]+)$/);
  if (m) { setNav(""); view = sandboxPage(main, decodeURIComponent(m[1])); }
  else if (p === "/settings") { setNav("settings"); view = settingsPage(main); }
  else { setNav("fleet"); view = fleetPage(main); }
}

function settings() {
  if (settingsCache) return Promise.resolve(settingsCache);
  return api("GET", "/api/settings").then(function (s) { settingsCache = s; return s; });
}

// ------------------------------------------------------------------ fleet

function fleetPage(main) {
  var tbody = h("tbody");
  var banner = h("div", { class: "banner hidden" });
  var notes = h("div");
  var formBox = h("div", { class: "hidden" });
  var count = h("span", { class: "muted" });
  var rows = {};
  var page = { close: function () { live.close(); } };

  main.appendChild(h("div", { class: "row" },
    h("h1", { text: "Sandboxes" }), count, h("span", { class: "spacer" }),
    h("button", { class: "primary", onclick: function () { formBox.classList.toggle("hidden"); } }, "New sandbox")));
  main.appendChild(formBox);
  main.appendChild(banner);
  main.appendChild(h("div", { class: "card" }, h("table", { class: "grid" },
    h("thead", null, h("tr", null, ["Name", "State", "Branch", "Image", "Network", "Created", ""].map(function (t) {
      return h("th", { text: t });
    }))), tbody)));
  main.appendChild(h("div", { class: "notes" }, h("h2", { text: "Notifications" }), notes));
  buildCreateForm(formBox);

  function actions(sb) {
    var cell = h("td", { class: "actions" });
    cell.appendChild(h("button", { class: "small", onclick: function () { navigate("/sandbox/" + encodeURIComponent(sb.name)); } }, "Open"));
    if (sb.state === "running") {
      cell.appendChild(h("button", { class: "small", onclick: function () { act(sb.name, "stop"); } }, "Stop"));
    } else if (sb.state === "stopped") {
      cell.appendChild(h("button", { class: "small", onclick: function () { act(sb.name, "start"); } }, "Start"));
    }
    if (sb.state !== "creating" && sb.state !== "removing") {
      cell.appendChild(h("button", { class: "small danger", onclick: function () { removeSandbox(sb.name); } }, "Remove"));
    }
    return cell;
  }
  function stateCell(sb) {
    var td = h("td", null, badge(sb.state));
    if (sb.progress) {
      var pct = sb.progress.total ? Math.round(100 * sb.progress.done / sb.progress.total) : 0;
      var bar = h("span", { class: "bar" }, h("i"));
      bar.firstChild.style.width = pct + "%";
      td.appendChild(h("div", { class: "progress" }, bar,
        sb.progress.done + "/" + sb.progress.total + (sb.progress.current ? " " + sb.progress.current : "")));
    }
    return td;
  }
  function draw(fleet) {
    clear(tbody);
    var list = fleet.sandboxes || [];
    count.textContent = list.length ? "(" + list.length + ")" : "";
    banner.classList.toggle("hidden", fleet.engine !== false);
    banner.textContent = "The container engine does not answer: states are the last recorded ones.";
    if (!list.length) {
      tbody.appendChild(h("tr", null, h("td", { colspan: 7, class: "empty" },
        "No sandboxes yet. Create one with New sandbox, or 'foundry new' in a repository.")));
      return;
    }
    list.slice().reverse().forEach(function (sb) {
      tbody.appendChild(h("tr", null,
        h("td", { class: "name-cell" }, h("a", { href: "/sandbox/" + encodeURIComponent(sb.name),
          "data-nav": "/sandbox/" + encodeURIComponent(sb.name), text: sb.name })),
        stateCell(sb),
        h("td", { class: "mono", text: sb.branch || "" }),
        h("td", { class: "mono", text: sb.image || "" }),
        h("td", { text: sb.network || "" }),
        h("td", { class: "muted", text: ago(sb.created_ms), title: sb.created_at }),
        actions(sb)));
    });
  }
  function note(n) {
    var el = h("div", { class: "note " + (n.level || "") }, h("span", { class: "t", text: ago(n.ts) }),
      h("span", null, h("span", { class: "title", text: n.title }),
        n.text ? h("span", { class: "muted", text: " — " + n.text }) : null,
        n.data && n.data.hint ? h("span", { class: "muted", text: " (" + n.data.hint + ")" }) : null));
    notes.insertBefore(el, notes.firstChild);
    while (notes.childNodes.length > 30) notes.removeChild(notes.lastChild);
  }
  var live = new Live({ fleet: 1 }, { fleet: draw, notification: note });
  return page;
}

function act(name, what) {
  return api("POST", "/api/sandboxes/" + encodeURIComponent(name) + "/" + what)
    .then(function () { toast(name + ": " + (what === "stop" ? "stopped" : "started")); }, fail);
}

function removeSandbox(name) {
  if (!confirm("Remove sandbox " + name + "?\n\nIts commits are first brought into your repository as its branch.")) return;
  api("DELETE", "/api/sandboxes/" + encodeURIComponent(name)).then(function () { toast("removing " + name); }, fail);
}

function buildCreateForm(box) {
  var f = {
    repo: h("input", { placeholder: "path or URL" }),
    preset: h("select"),
    name: h("input", { placeholder: "from the repository" }),
    branch: h("input", { placeholder: "sandbox/NAME" }),
    from: h("input", { placeholder: "the repository's branch" }),
    network: h("select", null, ["allowlist", "none", "host-only", "open"].map(function (n) { return h("option", { value: n, text: n }); })),
    image: h("input", { placeholder: "default" })
  };
  f.preset.appendChild(h("option", { value: "", text: "(none: a shell)" }));
  settings().then(function (s) {
    (s.presets || []).forEach(function (p) {
      f.preset.appendChild(h("option", { value: p.name, text: p.name + (p.description ? " — " + p.description : "") }));
    });
    if (s.defaults && s.defaults.image) f.image.placeholder = s.defaults.image;
  }, fail);
  if (info && info.repo) f.repo.placeholder = info.repo;
  var submit = h("button", { class: "primary", type: "submit" }, "Create");
  var form = h("form", { class: "create card", onsubmit: function (e) {
    e.preventDefault();
    var body = {};
    Object.keys(f).forEach(function (k) { if (f[k].value) body[k] = f[k].value; });
    submit.disabled = true;
    api("POST", "/api/sandboxes", body).then(function (r) {
      toast("creating " + r.name + "…");
      navigate("/sandbox/" + encodeURIComponent(r.name) + "#logs");
    }, fail).then(function () { submit.disabled = false; });
  } },
    Object.keys(f).map(function (k) { return h("label", null, k, f[k]); }),
    h("div", { class: "buttons" }, submit,
      h("button", { type: "button", onclick: function () { box.classList.add("hidden"); } }, "Cancel")));
  box.appendChild(form);
}

// ------------------------------------------------------------------ one sandbox

var TABS = [["logs", "Logs"], ["terminal", "Terminal"], ["changes", "File Changes"], ["editor", "Editor"],
            ["audit", "Audit"], ["chat", "Chat"]];

function sandboxPage(main, name) {
  main.className = "with-hud";
  var sb = null, gone = false;
  var head = h("div", { class: "sb-head" });
  var stagesBox = h("div", { class: "stages" });
  var facts = h("div", { class: "facts card" });
  main.appendChild(h("div", null, h("a", { href: "/", "data-nav": "/", text: "← Sandboxes" })));
  main.appendChild(head);
  main.appendChild(stagesBox);
  main.appendChild(facts);

  // the HUD
  var hud = h("div", { class: "hud" });
  var tabBar = h("div", { class: "hud-tabs" });
  var body = h("div", { class: "hud-body" });
  hud.appendChild(tabBar);
  hud.appendChild(body);
  document.body.appendChild(hud);
  var panes = {}, buttons = {}, active = null;
  var ctx = { name: name, sandbox: function () { return sb; } };
  var makers = { logs: logsPane, terminal: terminalPane, changes: changesPane, editor: editorPane,
                 audit: auditPane, chat: chatPane };
  TABS.forEach(function (t) {
    var b = h("button", { class: "tab", onclick: function () { show(t[0]); } }, t[1], h("span", { class: "count" }));
    buttons[t[0]] = b;
    tabBar.appendChild(b);
  });
  tabBar.appendChild(h("span", { class: "spacer" }));
  tabBar.appendChild(h("span", { class: "hint", text: "Ctrl+J" }));
  var toggle = h("button", { class: "small", title: "Expand or collapse (Ctrl+J)", onclick: function () { toggleHud(); } }, "↕");
  tabBar.appendChild(toggle);

  function pane(id) {
    if (!panes[id]) {
      var el = h("div", { class: "pane hidden" });
      body.appendChild(el);
      panes[id] = makers[id](el, ctx, function (n) { buttons[id].lastChild.textContent = n ? String(n) : ""; });
      panes[id].el = el;
    }
    return panes[id];
  }
  function show(id) {
    if (!makers[id]) id = "logs";
    if (active === id && !hud.classList.contains("collapsed")) { return; }
    hud.classList.remove("collapsed");
    Object.keys(panes).forEach(function (k) { panes[k].el.classList.add("hidden"); if (k !== id && panes[k].hide) panes[k].hide(); });
    Object.keys(buttons).forEach(function (k) { buttons[k].classList.toggle("active", k === id); });
    active = id;
    var p = pane(id);
    p.el.classList.remove("hidden");
    if (p.show) p.show();
    if (location.hash !== "#" + id) history.replaceState(null, "", "#" + id);
  }
  function toggleHud() {
    if (hud.classList.contains("collapsed")) { hud.classList.remove("collapsed"); hud.classList.add("expanded"); }
    else if (hud.classList.contains("expanded")) { hud.classList.remove("expanded"); hud.classList.add("collapsed"); }
    else { hud.classList.add("expanded"); }
    var p = active && panes[active];
    if (p && p.show && !hud.classList.contains("collapsed")) p.show();
  }
  function onKey(e) {
    if ((e.ctrlKey || e.metaKey) && (e.key === "j" || e.key === "J")) {
      if (document.activeElement && document.activeElement.closest && document.activeElement.closest(".terminal")) return;
      e.preventDefault();
      toggleHud();
    }
  }
  document.addEventListener("keydown", onKey);

  function drawHead() {
    clear(head);
    if (gone) {
      head.appendChild(h("h1", { text: name }));
      head.appendChild(badge("removed"));
      return;
    }
    var mode = (info && info.engine_mode) || "local";
    head.appendChild(h("h1", { text: sb.name }));
    head.appendChild(badge(sb.state));
    head.appendChild(h("span", { class: "badge mode", text: mode, title: "Runtime mode" }));
    head.appendChild(h("span", { class: "meta" },
      h("span", null, "branch ", h("b", { class: "mono", text: sb.branch || "—" })),
      sb.base ? h("span", null, "from ", h("b", { class: "mono", text: sb.base })) : null,
      h("span", null, "network ", h("b", { text: sb.network || "—" })),
      h("span", null, "created ", h("b", { text: ago(sb.created_ms), title: sb.created_at }))));
    head.appendChild(h("span", { class: "spacer" }));
    if (sb.state === "running") head.appendChild(h("button", { onclick: function () { act(name, "stop"); } }, "Stop"));
    if (sb.state === "stopped") head.appendChild(h("button", { onclick: function () { act(name, "start"); } }, "Start"));
    if (sb.state !== "creating" && sb.state !== "removing") {
      head.appendChild(h("button", { class: "danger", onclick: function () { removeSandbox(name); } }, "Remove"));
    }
  }
  function drawStages() {
    clear(stagesBox);
    (sb.stages || []).forEach(function (s) {
      var mark = { done: "✓", skipped: "–", failed: "✗", running: "●", pending: "○", undone: "↶" }[s.status] || "?";
      stagesBox.appendChild(h("div", { class: "stage " + s.status, title: s.error || s.reason || s.note || s.status },
        h("span", { class: "mark", text: mark }), " ", s.name,
        h("span", { class: "ms", text: s.ms !== undefined ? dur(s.ms) : (s.status === "running" && s.started_at ? "…" : "") }),
        (s.error || s.reason) ? h("span", { class: "why", text: s.error || s.reason }) : null));
    });
  }
  function drawFacts() {
    clear(facts);
    function fact(k, v) { if (v !== undefined && v !== null && v !== "") facts.appendChild(h("div", null, h("span", { text: k }), h("code", { text: String(v) }))); }
    fact("image", sb.image);
    fact("agent", sb.agent && sb.agent.name);
    fact("preset", sb.preset);
    fact("container", sb.container);
    fact("workspace", sb.workspace);
    fact("repository", sb.repo);
    fact("limits", sb.limits && [sb.limits.cpus && sb.limits.cpus + " CPU", sb.limits.memory, sb.limits.pids && sb.limits.pids + " pids"].filter(Boolean).join(", "));
    fact("tools", (sb.tools || []).join(", "));
    fact("env", (sb.env_names || []).join(", "));
    if (sb.error) fact("last error", sb.error);
  }
  var live = new Live({ sandbox: name, fleet: 0 }, {
    sandbox: function (d) {
      if (d.gone) { gone = true; drawHead(); toast(name + " is gone"); return; }
      sb = d;
      drawHead(); drawStages(); drawFacts();
      Object.keys(panes).forEach(function (k) { if (panes[k].sandbox) panes[k].sandbox(d); });
    },
    log: function (e) { pane("logs").add(e); },
    audit: function (r) { pane("audit").add(r); },
    chat: function (m) { pane("chat").add(m); }
  });
  show((location.hash || "#logs").slice(1));
  return {
    close: function () {
      live.close();
      document.removeEventListener("keydown", onKey);
      Object.keys(panes).forEach(function (k) { if (panes[k].close) panes[k].close(); });
      hud.remove();
    }
  };
}

// ------------------------------------------------------------------ Logs

function logsPane(el, ctx, setCount) {
  var list = h("div", { class: "logs" });
  var scroller = h("div", { class: "pane-body" }, list);
  var filter = h("input", { placeholder: "filter", oninput: refilter });
  var follow = h("input", { type: "checkbox", checked: true });
  var n = 0;
  el.appendChild(h("div", { class: "pane-bar" }, h("b", { text: "Setup and log stream" }), filter,
    h("label", null, follow, " follow"), h("span", { class: "spacer" }),
    h("button", { class: "small", onclick: function () { clear(list); n = 0; setCount(0); } }, "Clear")));
  el.appendChild(scroller);
  function describe(e) {
    var d = e.data || {};
    if (e.kind === "stage") {
      var m = { start: "started", done: "✓ done", skip: "– skipped", fail: "✗ failed", note: "", undo: "↶ undone",
                undo_fail: "✗ undo failed" }[d.event] || d.event;
      var text = (d.stage || "?") + (m ? " " + m : "") + (d.ms !== undefined ? " in " + dur(d.ms) : "") +
        (d.reason ? ": " + d.reason : "") + (d.error ? ": " + (d.error.message || d.error.code) : "") +
        (d.message ? ": " + d.message : "");
      return { kind: "stage", cls: "ev-" + d.event, text: text };
    }
    if (e.kind === "log") return { kind: e.stream || "log", cls: "ev-" + (e.stream || "log"), text: (e.text || "").replace(/\n$/, "") };
    return { kind: e.kind, cls: "", text: JSON.stringify(d) };
  }
  function matches(row) {
    var q = filter.value.toLowerCase();
    return !q || row.textContent.toLowerCase().indexOf(q) >= 0;
  }
  function refilter() {
    Array.prototype.forEach.call(list.childNodes, function (r) { r.classList.toggle("hidden", !matches(r)); });
  }
  return {
    add: function (e) {
      var d = describe(e);
      var row = h("div", { class: "logline " + (d.cls || "") }, h("span", { class: "t", text: clock(e.ts) }),
        h("span", { class: "k", text: d.kind, title: d.kind }), h("span", { class: "m", text: d.text }));
      if (!matches(row)) row.classList.add("hidden");
      list.appendChild(row);
      n++;
      while (list.childNodes.length > 5000) list.removeChild(list.firstChild);
      setCount(n);
      if (follow.checked) scroller.scrollTop = scroller.scrollHeight;
    },
    show: function () { if (follow.checked) scroller.scrollTop = scroller.scrollHeight; }
  };
}

// ------------------------------------------------------------------ Terminal

var xtermLoading = null;
function loadXterm() {
  if (window.FoundryXterm) return Promise.resolve(window.FoundryXterm);
  if (xtermLoading) return xtermLoading;
  xtermLoading = new Promise(function (resolve, reject) {
    var s = document.createElement("script");
    s.src = "/assets/xterm.js";
    s.onload = function () {
      if (window.FoundryXterm && window.FoundryXterm.Terminal) resolve(window.FoundryXterm);
      else reject(new Error("xterm.js did not load"));
    };
    s.onerror = function () { xtermLoading = null; reject(new Error("xterm.js is not available")); };
    document.head.appendChild(s);
  });
  return xtermLoading;
}

function terminalPane(el, ctx) {
  var mode = h("select", null, h("option", { value: "agent", text: "agent session (tmux)" }),
    h("option", { value: "shell", text: "new shell" }));
  var status = h("span", { class: "muted term-status", text: "not connected" });
  var connectBtn = h("button", { class: "small", onclick: function () { connect(); } }, "Connect");
  var wrap = h("div", { class: "term-wrap" });
  el.appendChild(h("div", { class: "pane-bar" }, h("b", { text: "Terminal" }), mode, connectBtn, status,
    h("span", { class: "spacer" }), h("span", { class: "muted", text: "output passes through secret redaction" })));
  el.appendChild(wrap);
  var term = null, ws = null, X = null, started = false, decoder = null;

  function setStatus(t) { status.textContent = t; }
  function fit() {
    if (!term || !X) return;
    if (X.fit && X.fit.fit) { try { X.fit.fit(term); } catch (e) { /* not laid out yet */ } }
  }
  function sendSize() {
    if (ws && ws.readyState === 1 && term) ws.send(JSON.stringify({ type: "resize", rows: term.rows, cols: term.cols }));
  }
  function ensureTerm() {
    if (term) return Promise.resolve(term);
    return loadXterm().then(function (x) {
      X = x;
      term = new x.Terminal({ cursorBlink: true, fontSize: 13, rendererType: "canvas", scrollback: 5000,
        fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
        theme: { background: "#0b0e12", foreground: "#d7dde5", cursor: "#5aa9ff" } });
      term.open(wrap);
      fit();
      var onData = function (d) { if (ws && ws.readyState === 1) ws.send(new TextEncoder().encode(d)); };
      if (term.onData) term.onData(onData); else term.on("data", onData);
      var onResize = function () { sendSize(); };
      if (term.onResize) term.onResize(onResize); else term.on("resize", onResize);
      return term;
    });
  }
  function connect() {
    if (ws) { ws.onclose = null; ws.close(); ws = null; }
    setStatus("connecting…");
    ensureTerm().then(function () {
      fit();
      return api("POST", "/api/sandboxes/" + encodeURIComponent(ctx.name) + "/terminal", { mode: mode.value });
    }).then(function (r) {
      var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + r.url +
        "&rows=" + term.rows + "&cols=" + term.cols;
      decoder = new TextDecoder("utf-8");
      ws = new WebSocket(url);
      ws.binaryType = "arraybuffer";
      ws.onopen = function () { setStatus("connected (" + mode.value + ")"); connectBtn.textContent = "Reconnect"; term.focus(); sendSize(); };
      ws.onmessage = function (m) {
        if (typeof m.data === "string") {
          var c = {};
          try { c = JSON.parse(m.data); } catch (e) { return; }
          if (c.type === "exit") setStatus("the session ended" + (c.code !== null && c.code !== undefined ? " (status " + c.code + ")" : ""));
          if (c.type === "error") setStatus(c.message);
          return;
        }
        term.write(decoder.decode(new Uint8Array(m.data), { stream: true }));
      };
      ws.onclose = function (e) {
        if (status.textContent.indexOf("ended") < 0) setStatus("disconnected" + (e.reason ? ": " + e.reason : ""));
        ws = null;
      };
    }).catch(function (e) {
      setStatus(e.message);
      clear(wrap).appendChild(h("div", { class: "term-msg" }, e.message,
        info && info.xterm_error ? h("p", { text: info.xterm_error }) : null));
      term = null;
    });
  }
  function onWinResize() { if (!el.classList.contains("hidden")) fit(); }
  window.addEventListener("resize", onWinResize);
  return {
    show: function () {
      if (!started) { started = true; connect(); }
      setTimeout(function () { fit(); if (term) term.focus(); }, 30);
    },
    close: function () {
      window.removeEventListener("resize", onWinResize);
      if (ws) { ws.onclose = null; ws.close(); }
      if (term) { try { (term.dispose || term.destroy).call(term); } catch (e) { /* gone */ } }
    }
  };
}

// ------------------------------------------------------------------ File Changes

function diffTable(patch) {
  var tb = h("tbody");
  var oldN = 0, newN = 0;
  (patch || "").split("\n").forEach(function (line, i, all) {
    if (i === all.length - 1 && line === "") return;
    var m = line.match(/^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@/);
    if (m) {
      oldN = parseInt(m[1], 10); newN = parseInt(m[2], 10);
      tb.appendChild(h("tr", { class: "hunk" }, h("td", { class: "n" }), h("td", { class: "n" }), h("td", { class: "c", text: line })));
      return;
    }
    var c = line.charAt(0), cls = "", a = "", b = "";
    if (c === "+") { cls = "add"; b = newN++; }
    else if (c === "-") { cls = "del"; a = oldN++; }
    else if (c === "\\") { cls = "meta"; }
    else { a = oldN++; b = newN++; }
    tb.appendChild(h("tr", { class: cls }, h("td", { class: "n", text: a }), h("td", { class: "n", text: b }),
      h("td", { class: "c", text: line })));
  });
  return h("table", { class: "diff" }, tb);
}

function changesPane(el, ctx, setCount) {
  var summary = h("span", { class: "muted" });
  var list = h("div", { class: "pane-body" });
  var timer = null, loading = false;
  el.appendChild(h("div", { class: "pane-bar" }, h("b", { text: "Changes against the base" }), summary,
    h("span", { class: "spacer" }), h("button", { class: "small", onclick: function () { load(); } }, "Refresh")));
  el.appendChild(list);
  var open = {};
  function load() {
    if (loading) return;
    loading = true;
    api("GET", "/api/sandboxes/" + encodeURIComponent(ctx.name) + "/changes").then(function (d) {
      clear(list);
      var files = d.files || [];
      setCount(files.length);
      summary.textContent = files.length + " file" + (files.length === 1 ? "" : "s") + " changed, +" + d.additions +
        " −" + d.deletions + (d.base ? " (base " + d.base + ")" : "");
      if (!files.length) list.appendChild(h("div", { class: "empty", text: "No changes yet." }));
      files.forEach(function (f) {
        var st = { added: "A", deleted: "D", modified: "M", renamed: "R", copied: "C", typechange: "T" }[f.status] || "?";
        var bodyEl = h("div", { class: open[f.path] === false ? "hidden" : "" },
          f.binary ? h("div", { class: "pad muted", text: "binary file" }) : diffTable(f.patch),
          f.truncated ? h("div", { class: "pad muted", text: "(cut: the diff is too large to show whole)" }) : null);
        var headEl = h("div", { class: "diff-head", onclick: function () {
          bodyEl.classList.toggle("hidden");
          open[f.path] = !bodyEl.classList.contains("hidden");
        } }, h("span", { class: "st " + f.status, text: st, title: f.status }),
          h("span", { class: "mono", text: (f.old_path ? f.old_path + " → " : "") + f.path }),
          h("span", { class: "spacer" }), h("span", { class: "add", text: "+" + f.additions }),
          h("span", { class: "del", text: "−" + f.deletions }));
        list.appendChild(h("div", { class: "diff-file" }, headEl, bodyEl));
      });
    }, function (e) {
      clear(list).appendChild(h("div", { class: "pad muted", text: e.message }));
    }).then(function () { loading = false; });
  }
  return {
    show: function () { load(); clearInterval(timer); timer = setInterval(load, 5000); },
    hide: function () { clearInterval(timer); },
    close: function () { clearInterval(timer); }
  };
}

// ------------------------------------------------------------------ Editor

function editorPane(el, ctx) {
  var tree = h("div", { class: "tree" });
  var pathLabel = h("span", { class: "mono", text: "no file open" });
  var state = h("span", { class: "muted" });
  var saveBtn = h("button", { class: "small primary", disabled: true, onclick: function () { save(); } }, "Save");
  var area = h("div", { class: "edit-area" }, h("div", { class: "notice", text: "Pick a file on the left." }));
  el.appendChild(h("div", { class: "pane-bar" }, h("b", { text: "Editor" }), pathLabel, state, h("span", { class: "spacer" }),
    h("button", { class: "small", onclick: function () { newFile(); } }, "New file"),
    h("button", { class: "small", onclick: function () { reload(); } }, "Reload"), saveBtn,
    h("span", { class: "muted", text: "Ctrl+S saves" })));
  el.appendChild(h("div", { class: "editor" }, tree, area));
  var cur = null, text = null, loadedTree = false, selected = null;
  var base = "/api/sandboxes/" + encodeURIComponent(ctx.name) + "/files?path=";

  function listDir(path, container, depth) {
    return api("GET", base + encodeURIComponent(path)).then(function (d) {
      clear(container);
      (d.entries || []).forEach(function (e) {
        var p = path ? path + "/" + e.name : e.name;
        var item = h("div", { class: "item " + (e.type === "directory" ? "dir" : e.type), title: p, text: e.name });
        item.style.paddingLeft = (10 + depth * 14) + "px";
        var kids = h("div", { class: "hidden" });
        item.addEventListener("click", function () {
          if (e.type === "directory") {
            item.classList.toggle("open");
            kids.classList.toggle("hidden");
            if (item.classList.contains("open") && !kids.firstChild) listDir(p, kids, depth + 1).catch(fail);
          } else if (e.type === "file") {
            if (selected) selected.classList.remove("sel");
            selected = item;
            item.classList.add("sel");
            open(p);
          }
        });
        container.appendChild(item);
        container.appendChild(kids);
      });
    });
  }
  function dirty() { return cur && text && text.value !== cur.content; }
  function setDirty() {
    state.textContent = dirty() ? "● modified" : (cur ? cur.size + " bytes" : "");
    state.className = dirty() ? "dirty" : "muted";
    saveBtn.disabled = !dirty() || !cur || cur.readonly;
  }
  function open(path) {
    if (dirty() && !confirm("Discard the changes to " + cur.path + "?")) return;
    api("GET", base + encodeURIComponent(path)).then(function (f) {
      clear(area);
      cur = f;
      pathLabel.textContent = f.path;
      text = null;
      if (f.too_large) { area.appendChild(h("div", { class: "notice", text: "Too large for the editor (" + f.size + " bytes)." })); }
      else if (f.binary) { area.appendChild(h("div", { class: "notice", text: "A binary file (" + f.size + " bytes)." })); }
      else {
        cur.readonly = !!f.redacted;
        text = h("textarea", { spellcheck: "false", readonly: f.redacted ? true : null, oninput: setDirty, onkeydown: function (e) {
          if ((e.ctrlKey || e.metaKey) && e.key === "s") { e.preventDefault(); save(); }
          if (e.key === "Tab" && !e.shiftKey) {
            e.preventDefault();
            var s = text.selectionStart;
            text.setRangeText("\t", s, text.selectionEnd, "end");
            setDirty();
          }
        } });
        text.value = f.content;
        if (f.redacted) area.appendChild(h("div", { class: "banner", text: "This file holds a secret: it is shown redacted and cannot be saved from here." }));
        area.appendChild(text);
      }
      setDirty();
    }, fail);
  }
  function save() {
    if (!dirty() || cur.readonly) return;
    saveBtn.disabled = true;
    api("PUT", base + encodeURIComponent(cur.path), { content: text.value, sha256: cur.sha256 }).then(function (r) {
      cur.content = text.value;
      cur.sha256 = r.sha256;
      cur.size = r.size;
      setDirty();
      toast("saved " + cur.path);
    }, function (e) {
      setDirty();
      if (e.status === 409) toast("Not saved: " + cur.path + " changed in the sandbox since you opened it.", "error", "Reload it to see the new version (your edits are lost), or copy them first.");
      else fail(e);
    });
  }
  function reload() {
    if (dirty() && !confirm("Discard the changes to " + cur.path + "?")) return;
    if (cur) { var p = cur.path; cur = null; text = null; open(p); }
    listDir("", tree, 0).catch(fail);
  }
  function newFile() {
    var p = prompt("New file (a path inside /workspace):");
    if (!p) return;
    api("PUT", base + encodeURIComponent(p), { content: "", create: true }).then(function () {
      toast("created " + p);
      listDir("", tree, 0).catch(fail);
      open(p);
    }, fail);
  }
  return {
    show: function () { if (!loadedTree) { loadedTree = true; listDir("", tree, 0).catch(function (e) { clear(tree).appendChild(h("div", { class: "pad muted", text: e.message })); }); } }
  };
}

// ------------------------------------------------------------------ Audit

// "path=README.md bytes=35" from an audit row's data
function summary(d) {
  if (!d || typeof d !== "object") return d ? String(d) : "";
  return Object.keys(d).sort().map(function (k) {
    var v = d[k];
    return k + "=" + (typeof v === "object" ? JSON.stringify(v) : String(v));
  }).join(" ");
}

function auditPane(el, ctx, setCount) {
  var tbody = h("tbody");
  var only = h("select", { onchange: refilter }, h("option", { value: "", text: "every decision" }),
    h("option", { value: "deny", text: "denied only" }), h("option", { value: "allow", text: "allowed only" }));
  var scroller = h("div", { class: "pane-body" }, h("table", { class: "grid audit" },
    h("thead", null, h("tr", null, ["Time", "Kind", "Decision", "Method", "Host", "Path", "Rule", "Reason"].map(function (t) { return h("th", { text: t }); }))),
    tbody));
  el.appendChild(h("div", { class: "pane-bar" }, h("b", { text: "Audit log" }), only,
    h("span", { class: "muted", text: "every decision of the proxy, the git policy, the hooks and this console" })));
  el.appendChild(scroller);
  var n = 0;
  function refilter() {
    Array.prototype.forEach.call(tbody.childNodes, function (r) {
      r.classList.toggle("hidden", !!only.value && r.getAttribute("data-decision") !== only.value);
    });
  }
  return {
    add: function (r) {
      var tr = h("tr", { "data-decision": r.decision || "" },
        h("td", { class: "mono muted", text: clock(r.ts), title: new Date(r.ts).toISOString() }),
        h("td", { text: r.kind }),
        h("td", null, r.decision ? h("span", { class: "badge " + r.decision, text: r.decision }) : ""),
        h("td", { class: "mono", text: r.method || "" }),
        h("td", { class: "mono", text: r.host || "" }),
        h("td", { class: "mono", text: r.path || "" }),
        h("td", { text: r.rule || "" }),
        h("td", { class: "muted", text: r.reason || summary(r.data) || (r.status ? String(r.status) : "") }));
      if (only.value && r.decision !== only.value) tr.classList.add("hidden");
      var atBottom = scroller.scrollTop + scroller.clientHeight >= scroller.scrollHeight - 30;
      tbody.appendChild(tr);
      while (tbody.childNodes.length > 5000) tbody.removeChild(tbody.firstChild);
      n++;
      setCount(n);
      if (atBottom) scroller.scrollTop = scroller.scrollHeight;
    }
  };
}

// ------------------------------------------------------------------ Chat

function chatPane(el, ctx, setCount) {
  var messages = h("div", { class: "messages" });
  var input = h("textarea", { placeholder: "Tell the agent something (Enter sends, Shift+Enter: new line)" });
  var send = h("button", { class: "primary", onclick: function () { submit(); } }, "Send");
  var screen = h("pre", { text: "" });
  var screenNote = h("span", { class: "muted" });
  var timer = null, n = 0;
  el.appendChild(h("div", { class: "pane-bar" }, h("b", { text: "Chat with the agent" }),
    h("span", { class: "muted", text: "messages are typed into the agent's session" })));
  el.appendChild(h("div", { class: "chat" },
    h("div", { class: "chat-main" }, messages, h("div", { class: "composer" }, input, send)),
    h("div", { class: "screen" }, h("div", { class: "pane-bar" }, h("b", { text: "Agent's screen" }), screenNote,
      h("span", { class: "spacer" }), h("button", { class: "small", onclick: function () { refresh(); } }, "Refresh")), screen)));
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); submit(); }
  });
  function submit() {
    var t = input.value;
    if (!t.trim()) return;
    send.disabled = true;
    api("POST", "/api/sandboxes/" + encodeURIComponent(ctx.name) + "/chat", { text: t }).then(function (m) {
      input.value = "";
      if (m.data && m.data.delivered === false) toast("Recorded, not delivered: " + (m.data.reason || ""), "error");
      setTimeout(refresh, 800);
    }, fail).then(function () { send.disabled = false; input.focus(); });
  }
  function refresh() {
    api("GET", "/api/sandboxes/" + encodeURIComponent(ctx.name) + "/screen").then(function (s) {
      screenNote.textContent = s.available ? "" : s.reason;
      screen.textContent = s.available ? s.text : "";
      screen.scrollTop = screen.scrollHeight;
    }, function (e) { screenNote.textContent = e.message; });
  }
  return {
    add: function (m) {
      var d = m.data || {};
      var meta = clock(m.ts) + " · " + m.role + (m.role === "user" ? (d.delivered ? " · delivered" : " · not delivered" + (d.reason ? ": " + d.reason : "")) : "");
      messages.appendChild(h("div", { class: "msg " + m.role }, m.text,
        h("span", { class: "meta" + (m.role === "user" && !d.delivered ? " fail" : ""), text: meta })));
      messages.scrollTop = messages.scrollHeight;
      n++;
      setCount(n);
    },
    show: function () { refresh(); clearInterval(timer); timer = setInterval(refresh, 3000); input.focus(); },
    hide: function () { clearInterval(timer); },
    close: function () { clearInterval(timer); }
  };
}

// ------------------------------------------------------------------ settings

function settingsPage(main) {
  main.appendChild(h("h1", { text: "Settings" }));
  var box = h("div", { class: "settings" }, h("p", { class: "muted", text: "Loading…" }));
  main.appendChild(box);
  settingsCache = null;
  settings().then(function (s) {
    clear(box);
    function kv(pairs) {
      return h("dl", { class: "kv" }, pairs.map(function (p) {
        return [h("dt", { text: p[0] }), h("dd", { class: "mono", text: p[1] === undefined || p[1] === null ? "—" : String(p[1]) })];
      }));
    }
    var d = s.defaults || {};
    box.appendChild(h("section", { class: "card" }, h("h2", { text: "Sandbox defaults" }),
      kv([["image", d.image], ["network", d.network], ["CPUs", d.cpus], ["memory", d.memory], ["processes", d.pids],
          ["workspace", d.workspace], ["home", d.home], ["user (uid)", d.user]]),
      h("p", { class: "muted", text: "Change them per sandbox with a preset (foundry preset), or with FOUNDRY_IMAGE." })));
    box.appendChild(h("section", { class: "card" }, h("h2", { text: "Setup pipeline" }),
      h("div", { class: "pipeline" }, (d.stages || []).map(function (n, i) { return h("span", { text: (i + 1) + ". " + n }); }))));
    var pt = h("tbody");
    (s.presets || []).forEach(function (p) {
      pt.appendChild(h("tr", null, h("td", { class: "mono", text: p.name }), h("td", { text: p.origin }),
        h("td", { class: "muted", text: p.description || "" })));
    });
    box.appendChild(h("section", { class: "card" }, h("h2", { text: "Presets" }),
      h("table", { class: "grid" }, h("thead", null, h("tr", null, h("th", { text: "Name" }), h("th", { text: "From" }), h("th", { text: "Description" }))), pt)));
    var v = s.vault || {};
    var vt = h("tbody");
    (v.secrets || []).forEach(function (e) {
      vt.appendChild(h("tr", null, h("td", { class: "mono", text: e.name }),
        h("td", { class: "muted", text: e.updated ? new Date(e.updated * 1000).toLocaleString() : "" }),
        h("td", { class: "muted", text: (e.used_by || []).join(", ") })));
    });
    box.appendChild(h("section", { class: "card" }, h("h2", { text: "Environment vault" }),
      !v.exists ? h("p", { class: "muted", text: "No vault yet: foundry vault init, then foundry vault set NAME." }) :
      [h("p", { class: "muted", text: "Names only: secret values never leave the vault for this page. " +
          (v.unlocked ? "The vault is unlocked in this console (its values are redacted from everything shown)." :
                        "The vault is locked here: values are redacted by token shape only.") }),
       v.error ? h("div", { class: "banner", text: v.error }) : null,
       h("table", { class: "grid" }, h("thead", null, h("tr", null, h("th", { text: "Secret" }), h("th", { text: "Updated" }), h("th", { text: "Used by" }))), vt)]));
    var c = s.console || {};
    box.appendChild(h("section", { class: "card" }, h("h2", { text: "This console" }),
      kv([["address", c.url], ["version", c.version], ["xterm.js", c.xterm || "not found"],
          ["engine", s.engine && s.engine.host], ["state", s.paths && s.paths.db]])));
  }, function (e) { clear(box).appendChild(h("div", { class: "banner", text: e.message })); });
  return null;
}

// ------------------------------------------------------------------ start

api("GET", "/api/info").then(function (i) {
  info = i;
  route();
}, function (e) {
  info = {};
  route();
  fail(e);
});
settings().then(function (s) {
  var host = s.engine && s.engine.host || "";
  var mode = /^unix:/.test(host) || host === "" ? "local" : "remote";
  if (info) info.engine_mode = mode;
  $("engine").textContent = mode;
  $("engine").title = "Sandboxes run on " + (host || "the local engine");
}, function () {});

})();
]==]
