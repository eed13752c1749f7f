/* Tierline administration: the workflow editor (validation as you type, problems at their
   lines, the server-drawn diagram, diff, state mapping, dry run, publish, history), users,
   run-time settings, and contact import. Text only through textContent (Tierline.el). */
"use strict";

window.TierlineAdmin = (function () {
  const T = window.Tierline;
  const t = T.t, el = T.el, clear = T.clear, api = T.api;
  const VALIDATE_DELAY_MS = 400;

  function $(id) { return document.getElementById(id); }

  /* ---- tabs ------------------------------------------------------------------------- */

  const TABS = ["workflow", "users", "settings", "import"];

  /* ---- workflow editor -------------------------------------------------------------- */

  const wf = {
    published: null,     // /api/workflows/current
    draft: "",           // the admin's text, kept while viewing an old version
    viewing: null,       // version number shown read-only, or null
    validation: null,    // the last /api/workflows/validate answer for the current text
    seq: 0,              // drops answers to texts that have since changed
    timer: null,
    markedLine: null,
  };

  function source() { return $("wf-source").value; }

  function lineHeight() {
    return parseFloat(getComputedStyle($("wf-source")).lineHeight) || 18;
  }

  function renderGutter() {
    const lines = source().split("\n").length;
    const bad = {};
    ((wf.validation && wf.validation.problems) || []).forEach(function (p) { bad[p.line] = true; });
    const gutter = clear($("gutter"));
    for (let i = 1; i <= lines; i++) {
      gutter.appendChild(el("span", {
        class: "gutter-line" + (bad[i] ? " has-problem" : ""), "data-line": i,
      }, (bad[i] ? "! " : "") + i));
      gutter.appendChild(document.createTextNode("\n"));
    }
    syncScroll();
  }

  function syncScroll() {
    const area = $("wf-source");
    $("gutter").scrollTop = area.scrollTop;
    placeLineMark();
  }

  function placeLineMark() {
    const mark = $("line-mark");
    if (wf.markedLine === null) { mark.hidden = true; return; }
    const area = $("wf-source");
    const pad = parseFloat(getComputedStyle(area).paddingTop) || 0;
    const top = pad + (wf.markedLine - 1) * lineHeight() - area.scrollTop;
    mark.style.top = top + "px";  // CSSOM, allowed by the page's CSP
    mark.style.height = lineHeight() + "px";
    mark.hidden = top < -lineHeight() || top > area.clientHeight;
  }

  /* Put the cursor on a line, select it (the browser highlights it), scroll it into view. */
  function gotoLine(line) {
    const area = $("wf-source");
    const lines = area.value.split("\n");
    const n = Math.min(Math.max(1, line), lines.length);
    let start = 0;
    for (let i = 0; i < n - 1; i++) start += lines[i].length + 1;
    area.focus();
    area.setSelectionRange(start, start + lines[n - 1].length);
    area.scrollTop = Math.max(0, (n - 1) * lineHeight() - area.clientHeight / 3);
    wf.markedLine = n;
    $("editor").dataset.markedLine = String(n);
    syncScroll();
  }

  function onEdit() {
    if (wf.viewing !== null) return;
    wf.draft = source();
    wf.markedLine = null;
    delete $("editor").dataset.markedLine;
    renderGutter();
    setStatus(t("Validating…"), "busy");
    clearTimeout(wf.timer);
    wf.timer = setTimeout(validate, VALIDATE_DELAY_MS);
  }

  function setStatus(text, kind) {
    const status = $("wf-status");
    status.textContent = text;
    status.dataset.kind = kind;
  }

  async function validate() {
    const text = source();
    const seq = ++wf.seq;
    let answer;
    try {
      answer = await api("POST", "/api/workflows/validate", { source: text });
    } catch (err) {
      T.showError(err);
      return;
    }
    if (seq !== wf.seq) return;  // the text changed while we waited
    wf.validation = answer;
    renderGutter();
    renderProblems(answer.problems);
    renderDiff(answer.diff);
    if (!answer.problems.length) {
      const same = wf.published && text === wf.published.source;
      setStatus(same ? t("Unchanged since version {n}.", { n: wf.published.version })
        : t("No problems."), "ok");
    } else {
      setStatus(answer.problems.length + " × " + t("Problems"), "bad");
    }
    await Promise.all([drawDiagram(text, seq), renderMapping(answer.needs_mapping || {}, text, seq)]);
    $("wf-source").dataset.validated = String(seq);
    document.body.dataset.validated = String(seq);
  }

  function renderProblems(problems) {
    const list = clear($("problems"));
    if (!problems.length) {
      list.appendChild(el("li", { class: "muted" }, t("No problems.")));
      return;
    }
    problems.forEach(function (p) {
      list.appendChild(el("li", { class: "problem", "data-line": p.line },
        el("button", {
          type: "button", class: "link problem-line", "data-line": p.line,
          onclick: function () { gotoLine(p.line); },
        }, t("Line {line}", { line: p.line })),
        el("span", { class: "problem-message" }, p.message)));
    });
  }

  function renderDiff(diff) {
    const pre = clear($("diff"));
    if (!diff) {
      pre.appendChild(el("span", { class: "muted" }, t("no diff")));
      return;
    }
    diff.split("\n").forEach(function (line) {
      let kind = "";
      if (line.startsWith("+") && !line.startsWith("+++")) kind = "diff-add";
      else if (line.startsWith("-") && !line.startsWith("---")) kind = "diff-del";
      else if (line.startsWith("@@")) kind = "diff-hunk";
      pre.appendChild(el("span", { class: "diff-line " + kind }, line));
      pre.appendChild(document.createTextNode("\n"));
    });
  }

  function svgUrl(svg) {
    // A data: URL in an <img>: the SVG cannot run anything, and CSP allows img-src data:.
    return "data:image/svg+xml;charset=utf-8," + encodeURIComponent(svg);
  }

  async function drawDiagram(text, seq) {
    const img = $("diagram");
    try {
      const response = await fetch("/api/workflows/diagram.svg", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": T.csrfToken() },
        body: JSON.stringify({ source: text }),
      });
      if (seq !== wf.seq) return;
      if (!response.ok) {  // does not parse: keep the last drawing, marked out of date
        img.classList.add("is-stale");
        return;
      }
      img.src = svgUrl(await response.text());
      img.classList.remove("is-stale");
      img.dataset.drawn = String(seq);
    } catch (err) {
      img.classList.add("is-stale");
    }
  }

  async function renderMapping(needs, text, seq) {
    const box = $("mapping");
    const rows = clear($("mapping-rows"));
    const removed = Object.keys(needs).sort();
    box.hidden = removed.length === 0;
    if (!removed.length) return;
    let states = [];
    try {
      states = (await api("POST", "/api/workflows/outline", { source: text })).states;
    } catch (err) {
      T.showError(err);
      return;
    }
    if (seq !== wf.seq) return;
    removed.forEach(function (state) {
      const label = T.tn(needs[state], "Move {n} client from {state} to",
        "Move {n} clients from {state} to", { state: state });
      const select = el("select", {
        class: "map-target", "data-from": state, "data-testid": "map-" + state, "aria-label": label,
      }, el("option", { value: "" }, t("choose…")));
      states.filter(function (s) { return !s.final; }).forEach(function (s) {
        select.appendChild(el("option", { value: s.name }, s.title + " (" + s.name + ")"));
      });
      rows.appendChild(el("div", { class: "map-row" },
        el("span", {}, label),
        select,
        el("span", { class: "move-count", "data-testid": "move-count-" + state })));
    });
  }

  function mappingOrNull() {
    const mapping = {};
    let complete = true;
    document.querySelectorAll("#mapping-rows select.map-target").forEach(function (select) {
      if (!select.value) complete = false;
      else mapping[select.dataset.from] = select.value;
    });
    return complete ? mapping : null;
  }

  async function publish(dryRun) {
    const result = $("publish-result");
    if (!wf.validation || wf.validation.problems.length) {
      result.textContent = t("Fix the problems first.");
      return;
    }
    const mapping = mappingOrNull();
    if (mapping === null) {
      result.textContent = t("Choose a state for every removed state.");
      return;
    }
    const body = { source: source(), mapping: mapping, dry_run: dryRun, note: $("publish-note").value };
    $("publish").disabled = $("dry-run").disabled = true;
    try {
      const report = await api("POST", "/api/workflows/publish", body);
      showMoves(report.moves || {});
      if (dryRun) {
        const moves = Object.entries(report.moves || {}).map(moveText);
        result.textContent = T.tn(report.unchanged,
          "Dry run: {moves}; {n} client stays where it is.",
          "Dry run: {moves}; {n} clients stay where they are.",
          { moves: moves.length ? moves.join("; ") : t("nothing moves") });
      } else {
        result.textContent = t("Published version {n}.", { n: report.version });
        T.flash(t("Published version {n}.", { n: report.version }), "info");
        $("publish-note").value = "";
        await loadWorkflow(false);
      }
      result.dataset.kind = dryRun ? "dry-run" : "published";
    } catch (err) {
      result.textContent = err.message;
      result.dataset.kind = "error";
      T.showError(err);
    } finally {
      $("publish").disabled = $("dry-run").disabled = false;
    }
  }

  function showMoves(moves) {
    document.querySelectorAll("#mapping-rows .move-count").forEach(function (span) {
      span.textContent = "";
    });
    Object.entries(moves).forEach(function (m) {
      const from = m[0].split(" -> ")[0];
      const span = document.querySelector('[data-testid="move-count-' + CSS.escape(from) + '"]');
      if (span) span.textContent = "→ " + moveText(m);
    });
  }

  /* One entry of a publish report's moves, ["a -> b", n]: "3 clients: a -> b". */
  function moveText(m) {
    return T.tn(m[1], "{n} client: {move}", "{n} clients: {move}", { move: m[0] });
  }

  async function loadVersions() {
    const answer = await api("GET", "/api/workflows/versions");
    const body = clear($("versions-body"));
    answer.versions.forEach(function (v) {
      body.appendChild(el("tr", { "data-version": v.version, class: v.is_current ? "is-current" : "" },
        el("td", {}, String(v.version), v.is_current ? el("span", { class: "badge state-badge" },
          " " + t("current")) : null),
        el("td", {}, T.formatTime(v.published_at)),
        el("td", {}, v.published_by || ""),
        el("td", { class: "version-note" }, v.note || ""),
        el("td", {}, el("button", {
          type: "button", class: "link", "data-testid": "view-version-" + v.version,
          onclick: function () { viewVersion(v.version); },
        }, t("View")))));
    });
  }

  async function viewVersion(number) {
    try {
      const v = await api("GET", "/api/workflows/versions/" + number);
      if (wf.viewing === null) wf.draft = source();
      wf.viewing = number;
      const area = $("wf-source");
      area.value = v.source;
      area.readOnly = true;
      $("wf-viewing-text").textContent = t("Viewing version {n} (read only)", { n: number });
      $("wf-viewing").hidden = false;
      $("diagram").src = "/api/workflows/diagram.svg?version=" + number;
      $("publish-form").hidden = true;
      wf.markedLine = null;
      renderGutter();
    } catch (err) {
      T.showError(err);
    }
  }

  function backToDraft() {
    wf.viewing = null;
    const area = $("wf-source");
    area.readOnly = false;
    area.value = wf.draft;
    $("wf-viewing").hidden = true;
    $("publish-form").hidden = false;
    onEdit();
  }

  async function loadWorkflow(replaceText) {
    try {
      wf.published = await api("GET", "/api/workflows/current");
      if (replaceText) {
        $("wf-source").value = wf.published.source;
        wf.draft = wf.published.source;
      }
      fillTierSelects(wf.published.tiers);
      await loadVersions();
      await validate();
    } catch (err) {
      T.showError(err);
    }
  }

  /* ---- users ------------------------------------------------------------------------ */

  let tiers = [];

  function tierSelect(value) {
    const select = el("select", { class: "tier-select" }, el("option", { value: "" }, t("(none)")));
    tiers.forEach(function (tier) { select.appendChild(el("option", { value: tier }, t(tier))); });
    select.value = value || "";
    return select;
  }

  function fillTierSelects(list) {
    tiers = list.slice();
    const select = document.querySelector("#user-form select[name=tier]");
    const keep = select.value;
    clear(select).appendChild(el("option", { value: "" }, t("(none)")));
    tiers.forEach(function (tier) { select.appendChild(el("option", { value: tier }, t(tier))); });
    select.value = keep;
  }

  async function patchUser(id, body) {
    try {
      await api("PATCH", "/api/users/" + id, body);
      T.flash(t("User updated."), "info");
    } catch (err) {
      T.showError(err);
    }
    await loadUsers();
  }

  async function loadUsers() {
    let answer;
    try {
      answer = await api("GET", "/api/users");
    } catch (err) {
      T.showError(err);
      return;
    }
    const body = clear($("users-body"));
    answer.users.forEach(function (u) {
      const tier = tierSelect(u.tier);
      tier.setAttribute("aria-label", t("Tier") + " " + u.username);
      tier.addEventListener("change", function () { patchUser(u.id, { tier: tier.value || null }); });
      const ext = el("input", {
        type: "text", value: u.extension || "", class: "ext-input", maxlength: "32",
        "aria-label": t("Extension") + " " + u.username,
      });
      const saveExt = el("button", { type: "button", onclick: function () {
        patchUser(u.id, { extension: ext.value.trim() || null });
      } }, t("Save"));
      const isSelf = T.user && T.user.id === u.id;
      body.appendChild(el("tr", {
        "data-username": u.username, "data-user-id": u.id, class: u.active ? "" : "is-inactive",
      },
        el("td", { class: "username" }, u.username),
        el("td", {}, u.display_name || ""),
        el("td", {}, t(u.role)),
        el("td", {}, tier),
        el("td", { class: "ext-cell" }, ext, saveExt),
        el("td", { "data-testid": "active" }, u.active ? "✔ " + t("active") : "✖ " + t("inactive")),
        el("td", {}, isSelf ? null : el("button", {
          type: "button", class: u.active ? "warn" : "", "data-testid": "toggle-active",
          onclick: function () { patchUser(u.id, { active: !u.active }); },
        }, u.active ? t("Deactivate") : t("Reactivate")))));
    });
  }

  async function createUser(ev) {
    ev.preventDefault();
    const form = $("user-form");
    const error = $("user-form-error");
    const data = new FormData(form);
    const body = {};
    ["username", "display_name", "password", "role", "tier", "extension"].forEach(function (k) {
      const v = String(data.get(k) || "").trim();
      if (v) body[k] = k === "password" ? String(data.get(k)) : v;
    });
    error.hidden = true;
    try {
      await api("POST", "/api/users", body);
      form.reset();
      T.flash(t("User created."), "info");
      await loadUsers();
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    }
  }

  /* ---- settings --------------------------------------------------------------------- */

  async function loadSettings() {
    let s;
    try {
      s = await api("GET", "/api/settings");
    } catch (err) {
      T.showError(err);
      return;
    }
    const f = $("settings-form").elements;
    f.window.value = s.calling.window;
    f.workdays.value = s.calling.workdays;
    f.holidays.value = (s.calling.holidays || []).join("\n");
    f.slice_times.value = (s.calling.slice_times || []).join(", ");
    f.ami_host.value = s.pbx.ami_host || "";
    f.ami_port.value = s.pbx.ami_port || "";
    f.ami_username.value = s.pbx.ami_username || "";
    f.ami_secret.value = s.pbx.ami_secret || "";  // "********" when set: never the secret
    $("pbx-note").textContent = s.pbx_note || "";
  }

  async function saveSettings(ev) {
    ev.preventDefault();
    const f = $("settings-form").elements;
    const error = $("settings-error");
    const list = function (text, sep) {
      return text.split(sep).map(function (x) { return x.trim(); }).filter(Boolean);
    };
    const pbx = {
      ami_host: f.ami_host.value.trim() || null,
      ami_username: f.ami_username.value.trim() || null,
      ami_secret: f.ami_secret.value || null,
    };
    if (f.ami_port.value) pbx.ami_port = Number(f.ami_port.value);
    const body = {
      calling: {
        window: f.window.value.trim(), workdays: f.workdays.value.trim(),
        holidays: list(f.holidays.value, /[\n,]/), slice_times: list(f.slice_times.value, /[,\s]+/),
      },
      pbx: pbx,
    };
    error.hidden = true;
    try {
      await api("PUT", "/api/settings", body);
      T.flash(t("Settings saved."), "info");
      await loadSettings();
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    }
  }

  /* ---- contact import --------------------------------------------------------------- */

  const IMPORT_POLL_MS = 1000;
  let importTimer = null;

  async function startImport(ev) {
    ev.preventDefault();
    const form = $("import-form");
    const error = $("import-error");
    const file = $("import-file").files[0];
    error.hidden = true;
    if (!file) return;
    const mapping = {};
    form.querySelectorAll("input[data-field]").forEach(function (input) {
      if (input.value.trim()) mapping[input.dataset.field] = input.value.trim();
    });
    const data = new FormData();
    data.append("mapping", JSON.stringify(mapping));
    data.append("on_duplicate", form.elements.on_duplicate.value);
    data.append("file", file, file.name);  // the file last: the options arrive first
    $("import-start").disabled = true;
    clearTimeout(importTimer);
    showProgress({ percent: 0, status: "uploading" });
    let answer;
    try {
      // Not T.api: the body is multipart (the browser sets its boundary), not JSON.
      const response = await fetch("/api/imports", {
        method: "POST", credentials: "same-origin", body: data,
        headers: { "Accept": "application/json", "X-CSRF-Token": T.csrfToken() },
      });
      answer = await response.json().catch(function () { return {}; });
      if (!response.ok) {
        throw new Error(answer.message || t("Something went wrong") + " (HTTP " + response.status + ")");
      }
    } catch (err) {
      $("import-progress-box").hidden = true;
      error.textContent = err.message;
      error.hidden = false;
      $("import-start").disabled = false;
      return;
    }
    pollImport(answer.job_id);
  }

  async function pollImport(jobId) {
    let job;
    try {
      job = await api("GET", "/api/imports/" + encodeURIComponent(jobId));
    } catch (err) {
      T.showError(err);
      importTimer = setTimeout(function () { pollImport(jobId); }, IMPORT_POLL_MS);
      return;
    }
    showProgress(job);
    if (job.status === "running" && job.running) {
      importTimer = setTimeout(function () { pollImport(jobId); }, IMPORT_POLL_MS);
      return;
    }
    $("import-start").disabled = false;
    $("import-progress-box").dataset.status = job.status;
  }

  function showProgress(job) {
    const box = $("import-progress-box");
    box.hidden = false;
    box.dataset.status = job.status;
    const percent = Math.max(0, Math.min(100, Number(job.percent) || 0));
    $("import-progress").value = percent;
    $("import-percent").textContent = percent.toFixed(0) + " %";
    const summary = $("import-summary");
    const table = document.querySelector("table.import-errors");
    const body = clear($("import-errors-body"));
    if (job.status === "uploading") {
      summary.textContent = t("Uploading…");
      table.hidden = true;
      return;
    }
    const figures = {
      rows: job.rows_done, created: job.created, merged: job.merged, errors: job.errors,
    };
    if (job.status === "running") {
      summary.textContent = t("Importing: {rows} rows read, {created} created, {merged} merged, " +
        "{errors} refused", figures);
    } else if (job.status === "done") {
      summary.textContent = t("Import finished: {rows} rows, {created} created, {merged} merged, " +
        "{errors} refused", figures);
    } else {
      summary.textContent = t("Import stopped: {message}", { message: job.message || job.status });
    }
    (job.error_rows || []).forEach(function (e) {
      body.appendChild(el("tr", { class: "import-error-row", "data-row": e.row },
        el("td", {}, String(e.row)), el("td", {}, e.column), el("td", {}, e.message)));
    });
    table.hidden = !(job.error_rows || []).length;
    if (job.errors > (job.error_rows || []).length) {
      summary.appendChild(document.createTextNode(" " + t("(the first {n} refused rows are shown)",
        { n: job.error_rows.length })));
    }
  }

  /* ---- start ------------------------------------------------------------------------ */

  document.addEventListener("DOMContentLoaded", function () {
    T.tabs(TABS);
    const area = $("wf-source");
    area.addEventListener("input", onEdit);
    area.addEventListener("scroll", syncScroll);
    $("wf-back").addEventListener("click", backToDraft);
    $("diagram").addEventListener("click", function () {  // natural size, scrollable
      const zoomed = $("diagram").classList.toggle("is-zoomed");
      $("diagram").parentElement.classList.toggle("is-zoomed", zoomed);
    });
    $("dry-run").addEventListener("click", function () { publish(true); });
    $("publish-form").addEventListener("submit", function (ev) { ev.preventDefault(); publish(false); });
    $("user-form").addEventListener("submit", createUser);
    $("settings-form").addEventListener("submit", saveSettings);
    $("import-form").addEventListener("submit", startImport);
    loadWorkflow(true).then(loadUsers);
    loadSettings();
  });

  return { gotoLine: gotoLine, validate: validate };
})();
