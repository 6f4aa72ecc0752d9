-- The console's style sheet.
return [==[
:root {
  --bg: #0f1216; --panel: #161b22; --panel2: #1c222b; --line: #2a313c; --text: #d7dde5;
  --muted: #8b95a3; --accent: #5aa9ff; --green: #3fb950; --red: #f85149; --amber: #d29922;
  --blue: #58a6ff; --violet: #bc8cff; --mono: ui-monospace, "DejaVu Sans Mono", "Menlo", "Consolas", monospace;
  --hud-h: 55vh;
}
* { box-sizing: border-box; }
html, body { margin: 0; height: 100%; background: var(--bg); color: var(--text);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
button, select, input, textarea { font: inherit; color: var(--text); }
button { background: var(--panel2); border: 1px solid var(--line); border-radius: 6px; padding: 4px 12px; cursor: pointer; }
button:hover:not(:disabled) { border-color: var(--accent); }
button:disabled { opacity: .5; cursor: default; }
button.primary { background: #1f6feb; border-color: #1f6feb; color: #fff; }
button.danger { color: var(--red); }
button.danger:hover:not(:disabled) { border-color: var(--red); }
button.small { padding: 2px 8px; font-size: 12px; }
input, select, textarea { background: var(--bg); border: 1px solid var(--line); border-radius: 6px; padding: 5px 8px; }
input:focus, select:focus, textarea:focus { outline: none; border-color: var(--accent); }
code, pre, .mono { font-family: var(--mono); font-size: 12.5px; }
.muted { color: var(--muted); }
.pad { padding: 16px 24px; }
.spacer { flex: 1; }
.hidden { display: none !important; }

.topbar { display: flex; align-items: center; gap: 18px; height: 48px; padding: 0 20px;
  background: var(--panel); border-bottom: 1px solid var(--line); position: sticky; top: 0; z-index: 20; }
.brand { color: var(--text); font-weight: 600; font-size: 16px; }
.brand .logo { color: var(--accent); }
.topnav a { color: var(--muted); margin-right: 14px; padding: 13px 2px; }
.topnav a.active { color: var(--text); border-bottom: 2px solid var(--accent); }
.live { color: var(--muted); font-size: 12px; }
.live.on { color: var(--green); }
.live.off { color: var(--red); }

main { padding: 20px 24px 0; }
main.with-hud { padding-bottom: calc(var(--hud-h) + 16px); }
h1 { font-size: 20px; margin: 0; font-weight: 600; }
h2 { font-size: 15px; margin: 22px 0 10px; font-weight: 600; }
.card > h2:first-child { margin-top: 0; }
main > .row:first-child { margin-bottom: 14px; }
.row { display: flex; align-items: center; gap: 10px; flex-wrap: wrap; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; }
.banner { background: #3a1d1d; border: 1px solid #6e2b2b; color: #ffb4ae; border-radius: 8px; padding: 10px 14px; margin: 10px 0; }
.denied { max-width: 560px; margin: 80px auto; }

.badge { display: inline-block; padding: 1px 9px; border-radius: 999px; font-size: 12px; font-weight: 600;
  border: 1px solid var(--line); background: var(--panel2); color: var(--muted); white-space: nowrap; }
.badge.running { color: var(--green); border-color: #2e6b3a; background: #12261a; }
.badge.creating { color: var(--blue); border-color: #1f4b80; background: #0f1f33; animation: pulse 1.4s infinite; }
.badge.removing { color: var(--amber); border-color: #6b5216; background: #2a2110; animation: pulse 1.4s infinite; }
.badge.stopped, .badge.exited, .badge.created { color: var(--muted); }
.badge.missing, .badge.failed, .badge.error, .badge.dead { color: var(--red); border-color: #6e2b2b; background: #2b1416; }
.badge.mode { color: var(--violet); border-color: #4b3a6b; background: #1d1629; }
.badge.allow { color: var(--green); } .badge.deny { color: var(--red); } .badge.error { color: var(--red); }
@keyframes pulse { 50% { opacity: .55; } }

table.grid { width: 100%; border-collapse: collapse; }
table.grid th { text-align: left; font-weight: 600; color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: .04em; padding: 6px 10px; border-bottom: 1px solid var(--line); }
table.grid td { padding: 8px 10px; border-bottom: 1px solid var(--line); vertical-align: middle; }
table.grid tr:hover td { background: #141920; }
table.grid td.actions { text-align: right; white-space: nowrap; }
table.grid td.actions button { margin-left: 4px; }
.name-cell a { font-weight: 600; }
.empty { text-align: center; padding: 40px; color: var(--muted); }
.progress { display: inline-flex; align-items: center; gap: 6px; font-size: 12px; color: var(--muted); }
.bar { width: 90px; height: 6px; border-radius: 3px; background: var(--line); overflow: hidden; }
.bar > i { display: block; height: 100%; background: var(--blue); }

form.create { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap: 10px 14px; margin: 14px 0; }
form.create label { display: flex; flex-direction: column; gap: 4px; font-size: 12px; color: var(--muted); }
form.create .buttons { grid-column: 1 / -1; display: flex; gap: 8px; }

.notes { margin-top: 18px; }
.note { display: flex; gap: 10px; padding: 6px 0; border-bottom: 1px solid var(--line); font-size: 13px; }
.note .t { color: var(--muted); min-width: 70px; }
.note.error .title { color: var(--red); }

.sb-head { display: flex; align-items: center; gap: 12px; flex-wrap: wrap; }
.sb-head .meta { color: var(--muted); font-size: 13px; display: flex; gap: 16px; flex-wrap: wrap; }
.sb-head .meta b { color: var(--text); font-weight: 500; }
.stages { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 8px; margin: 16px 0; }
.stage { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 8px 10px; font-size: 13px; }
.stage .mark { display: inline-block; width: 16px; text-align: center; font-weight: 700; }
.stage .ms { float: right; color: var(--muted); font-size: 12px; }
.stage .why { display: block; color: var(--muted); font-size: 11.5px; margin-top: 2px; overflow: hidden;
  text-overflow: ellipsis; white-space: nowrap; }
.stage.done .mark { color: var(--green); }
.stage.skipped .mark { color: var(--muted); }
.stage.failed { border-color: #6e2b2b; } .stage.failed .mark { color: var(--red); }
.stage.running { border-color: #1f4b80; } .stage.running .mark { color: var(--blue); animation: pulse 1s infinite; }
.stage.pending { opacity: .55; }
.stage.undone .mark { color: var(--amber); }
.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 6px 18px; font-size: 13px; }
.facts div span { color: var(--muted); display: inline-block; min-width: 90px; }

/* the HUD: a panel along the bottom, six tabs; Ctrl+J expands or collapses it */
.hud { position: fixed; left: 0; right: 0; bottom: 0; height: var(--hud-h); display: flex; flex-direction: column;
  background: var(--panel); border-top: 1px solid var(--line); z-index: 10; box-shadow: 0 -6px 18px rgba(0,0,0,.35); }
.hud.collapsed { height: 38px; }
.hud.expanded { height: calc(100vh - 48px); }
.hud-tabs { display: flex; align-items: stretch; height: 38px; border-bottom: 1px solid var(--line); flex: none; padding: 0 8px; }
.hud-tabs button.tab { background: none; border: none; border-bottom: 2px solid transparent; border-radius: 0;
  color: var(--muted); padding: 0 14px; }
.hud-tabs button.tab.active { color: var(--text); border-bottom-color: var(--accent); }
.hud-tabs button.tab .count { margin-left: 6px; font-size: 11px; color: var(--muted); }
.hud-tabs .hint { color: var(--muted); font-size: 12px; align-self: center; margin: 0 10px; }
.hud-body { flex: 1; min-height: 0; position: relative; }
.hud.collapsed .hud-body { display: none; }
.pane { position: absolute; inset: 0; display: flex; flex-direction: column; }
.pane-bar { display: flex; align-items: center; gap: 10px; padding: 6px 12px; border-bottom: 1px solid var(--line);
  font-size: 13px; flex: none; flex-wrap: wrap; }
.pane-body { flex: 1; overflow: auto; min-height: 0; }

.logs { font-family: var(--mono); font-size: 12.5px; padding: 6px 0; }
.logline { display: flex; gap: 10px; padding: 1px 12px; white-space: pre-wrap; word-break: break-word; }
.logline:hover { background: #141920; }
.logline .t { color: var(--muted); flex: none; }
.logline .k { flex: none; width: 70px; color: var(--violet); overflow: hidden; text-overflow: ellipsis; }
.logline.ev-fail .m, .logline.ev-undo_fail .m, .logline.ev-stderr .m { color: var(--red); }
.logline.ev-done .m { color: var(--green); }
.logline.ev-skip .m, .logline.ev-note .m { color: var(--muted); }
.logline.ev-undo .m { color: var(--amber); }

.term-wrap { flex: 1; min-height: 0; padding: 6px 8px; background: #0b0e12; }
.term-wrap .terminal { height: 100%; }
.term-msg { padding: 20px; color: var(--muted); }

.diff-file { border-bottom: 1px solid var(--line); }
.diff-head { display: flex; align-items: center; gap: 10px; padding: 7px 12px; cursor: pointer; background: var(--panel2);
  font-size: 13px; position: sticky; top: 0; }
.diff-head .st { font-family: var(--mono); font-weight: 700; width: 14px; }
.diff-head .st.added { color: var(--green); } .diff-head .st.deleted { color: var(--red); }
.diff-head .st.modified { color: var(--amber); } .diff-head .st.renamed { color: var(--violet); }
.diff-head .add { color: var(--green); } .diff-head .del { color: var(--red); }
table.diff { width: 100%; border-collapse: collapse; font-family: var(--mono); font-size: 12.5px; }
table.diff td { padding: 0 8px; white-space: pre-wrap; word-break: break-all; vertical-align: top; }
table.diff td.n { color: var(--muted); text-align: right; width: 1%; min-width: 44px; user-select: none; }
table.diff tr.add td.c { background: #12261a; } table.diff tr.add td.n { background: #0f2016; }
table.diff tr.del td.c { background: #2b1416; } table.diff tr.del td.n { background: #241114; }
table.diff tr.hunk td { color: var(--blue); background: #101a28; }

.editor { display: flex; flex: 1; min-height: 0; }
.tree { width: 260px; flex: none; overflow: auto; border-right: 1px solid var(--line); font-size: 13px; padding: 4px 0; }
.tree .item { padding: 2px 10px; cursor: pointer; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.tree .item:hover { background: var(--panel2); }
.tree .item.sel { background: #1f3a5f; }
.tree .item.dir::before { content: "\25B8  "; color: var(--muted); }
.tree .item.dir.open::before { content: "\25BE  "; }
.tree .item.file::before { content: "\00B7  "; color: var(--muted); }
.tree .item.symlink, .tree .item.other { color: var(--muted); cursor: default; }
.edit-area { flex: 1; display: flex; flex-direction: column; min-width: 0; }
.edit-area textarea { flex: 1; resize: none; border: none; border-radius: 0; background: #0b0e12;
  font-family: var(--mono); font-size: 13px; line-height: 1.5; padding: 10px 14px; tab-size: 4; white-space: pre; }
.edit-area .notice { padding: 20px; color: var(--muted); }
.dirty { color: var(--amber); }

table.audit td, table.audit th { font-size: 12.5px; padding: 4px 10px; }
table.audit td.mono { font-family: var(--mono); }

.chat { display: flex; flex: 1; min-height: 0; }
.chat-main { flex: 1; display: flex; flex-direction: column; min-width: 0; }
.messages { flex: 1; overflow: auto; padding: 10px 14px; }
.msg { max-width: 80%; margin: 6px 0; padding: 7px 12px; border-radius: 10px; background: var(--panel2);
  border: 1px solid var(--line); white-space: pre-wrap; word-break: break-word; }
.msg.user { margin-left: auto; background: #132a45; border-color: #1f4b80; }
.msg .meta { display: block; font-size: 11px; color: var(--muted); margin-top: 3px; }
.msg .meta.fail { color: var(--red); }
.composer { display: flex; gap: 8px; padding: 8px 12px; border-top: 1px solid var(--line); }
.composer textarea { flex: 1; resize: none; height: 58px; }
.screen { width: 46%; flex: none; border-left: 1px solid var(--line); display: flex; flex-direction: column; }
.screen pre { flex: 1; margin: 0; overflow: auto; padding: 10px 12px; background: #0b0e12; white-space: pre; }

.settings section { margin-bottom: 26px; }
.kv { display: grid; grid-template-columns: 180px 1fr; gap: 6px 12px; font-size: 13px; }
.kv dt { color: var(--muted); } .kv dd { margin: 0; }
.pipeline { display: flex; gap: 6px; flex-wrap: wrap; }
.pipeline span { background: var(--panel2); border: 1px solid var(--line); border-radius: 6px; padding: 2px 8px; font-size: 12.5px; }

#toasts { position: fixed; right: 16px; top: 60px; z-index: 50; display: flex; flex-direction: column; gap: 8px; }
.toast { background: var(--panel2); border: 1px solid var(--line); border-left: 3px solid var(--accent); border-radius: 6px;
  padding: 8px 12px; max-width: 420px; font-size: 13px; box-shadow: 0 4px 14px rgba(0,0,0,.4); }
.toast.error { border-left-color: var(--red); }
.toast .hint { display: block; color: var(--muted); font-size: 12px; }
]==]
