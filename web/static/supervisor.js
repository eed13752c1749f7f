/* Tierline supervisor dashboard: today's figures per operator against their norms, by slice;
   live status; follow-ups needing attention; the day's funnel; norms edited in place.
   Live status every 5 s, figures every 60 s and when the slice changes. Text only through
   textContent (Tierline.el). */
"use strict";

window.TierlineSupervisor = (function () {
  const T = window.Tierline;
  const t = T.t, el = T.el, clear = T.clear, api = T.api;

  const FIGURES = [
    ["calls", "Calls"], ["long_calls", "Calls ≥ 10 min"], ["presentations", "Presentations"],
    ["invoices", "Invoices"], ["payments", "Payments"],
  ];
  const STATUS = { on_call: "On a call", ringing: "Ringing", wrap_up: "Wrap-up", idle: "Idle" };
  const LIVE_MS = 5000;
  const FIGURES_MS = 60000;

  let slice = null;        // the last /api/supervisor/figures answer
  let live = null;         // the last /api/supervisor/live answer
  let editing = null;      // user_id whose norms are open for editing
  let optionsFilled = false;
  let failing = false;     // an error is already shown: do not repeat it every 5 s
  const clientNames = {};  // client id -> name, for the attention list

  function $(id) { return document.getElementById(id); }

  function reportOk() {
    failing = false;
    $("offline-banner").hidden = true;
  }

  function reportError(err) {
    if (err && err.status === 0) {
      const banner = $("offline-banner");
      banner.textContent = t("Offline — reconnecting…");
      banner.hidden = false;
      return;
    }
    if (!failing) T.showError(err);
    failing = true;
  }

  /* ---- figures ---------------------------------------------------------------------- */

  async function loadFigures() {
    const at = $("slice").value || "now";
    try {
      slice = await api("GET", "/api/supervisor/figures?at=" + encodeURIComponent(at));
      reportOk();
    } catch (err) {
      reportError(err);
      return;
    }
    fillSliceOptions(slice.slice_times || []);
    $("figures-updated").textContent = t("Updated {time}", { time: T.timeIn() });
    if (editing === null) renderFigures();
  }

  function fillSliceOptions(times) {
    if (optionsFilled) return;
    const select = $("slice");
    times.forEach(function (time) {
      select.insertBefore(el("option", { value: time }, time), select.lastElementChild);
    });
    optionsFilled = true;
  }

  function renderFigures() {
    const body = clear($("figures-body"));
    const operators = (slice && slice.operators) || [];
    $("figures-empty").hidden = operators.length > 0;
    operators.forEach(function (op) {
      body.appendChild(operatorRow(op));
      if (editing === op.user_id) body.appendChild(normsRow(op));
    });
    applyLive();
  }

  function operatorRow(op) {
    const row = el("tr", {
      class: "op-row" + (op.behind ? " is-behind" : ""),
      dataset: { userId: op.user_id },
      "data-testid": "op-row",
    },
      el("th", { scope: "row" }, el("div", { class: "op-name" },
        el("span", { "data-testid": "op-name" }, op.display_name),
        op.tier ? el("span", { class: "badge tier-badge tier-" + op.tier }, t(op.tier)) : null,
        op.behind ? el("span", { class: "behind-flag", "data-testid": "behind-flag" },
          "▼ " + t("Behind the norm")) : null)),
      el("td", { class: "op-status", "data-testid": "op-status" }, el("span", { class: "muted" }, "…")),
    );
    FIGURES.forEach(function (pair) {
      row.appendChild(figureCell(pair[0], op.figures[pair[0]] || { actual: 0 }));
    });
    row.appendChild(el("td", {},
      el("button", {
        type: "button", class: "link", "data-testid": "edit-norms",
        onclick: function () { editing = op.user_id; renderFigures(); focusNorms(); },
      }, t("Edit norms"))));
    return row;
  }

  function figureCell(name, fig) {
    const hasNorm = fig.norm !== null && fig.norm !== undefined;
    const title = hasNorm ? t("expected {expected} of {norm}", {
      expected: fig.expected, norm: fig.norm }) : t("no norm");
    return el("td", {
      class: "num fig" + (fig.behind ? " is-behind" : ""),
      "data-figure": name, "data-behind": fig.behind ? "true" : "false", title: title,
    },
      el("span", { class: "fig-actual", "data-testid": "fig-" + name }, fig.actual),
      hasNorm ? el("span", { class: "fig-norm" }, " / " + fig.expected) : null,
      fig.behind ? el("span", { class: "fig-behind-mark" }, " ▼ " + t("behind")) : null,
      hasNorm ? el("span", { class: "fig-day muted" }, t("Norms") + ": " + fig.norm) : null);
  }

  function normsRow(op) {
    const error = el("p", { class: "form-error", "data-testid": "norms-error", hidden: true });
    const inputs = FIGURES.map(function (pair) {
      const fig = op.figures[pair[0]] || {};
      return el("label", { class: "field norm-field" }, t(pair[1]),
        el("input", {
          type: "number", min: "0", step: "1", name: pair[0], class: "norm-input",
          value: fig.norm === null || fig.norm === undefined ? "" : fig.norm,
          "data-testid": "norm-" + pair[0],
        }));
    });
    const form = el("form", { class: "norms-form", "data-testid": "norms-form" },
      inputs,
      el("div", { class: "norms-actions" },
        el("button", { type: "submit", class: "primary" }, t("Save")),
        el("button", { type: "button", onclick: function () {
          editing = null; renderFigures();
        } }, t("Cancel"))),
      error);
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      saveNorms(op.user_id, form, error);
    });
    return el("tr", { class: "norms-row" }, el("td", { colspan: 8 }, form));
  }

  function focusNorms() {
    const first = document.querySelector(".norms-form input");
    if (first) first.focus();
  }

  async function saveNorms(userId, form, error) {
    const body = {};
    for (const input of form.querySelectorAll("input")) {
      if (input.value === "") continue;
      const value = Number(input.value);
      body[input.name] = Number.isInteger(value) ? value : input.value;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    error.hidden = true;
    try {
      await api("PUT", "/api/users/" + userId + "/norms", body);
      editing = null;
      T.flash(t("Norms saved."), "info");
      await loadFigures();
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
      button.disabled = false;
      T.showError(err);
    }
  }

  /* ---- live status, attention, funnel ----------------------------------------------- */

  async function loadLive() {
    try {
      live = await api("GET", "/api/supervisor/live");
      reportOk();
    } catch (err) {
      reportError(err);
      return;
    }
    applyLive();
    await renderAttention();
    renderMissed();
    renderFunnel();
  }

  function applyLive() {
    if (!live) return;
    const byId = {};
    live.operators.forEach(function (op) { byId[op.user_id] = op; });
    document.querySelectorAll("#figures-body tr.op-row").forEach(function (row) {
      const op = byId[row.dataset.userId];
      const cell = clear(row.querySelector(".op-status"));
      const status = op ? op.status : "idle";
      row.dataset.status = status;
      cell.appendChild(el("span", { class: "status status-" + status }, t(STATUS[status] || status)));
      if (op && op.since) cell.appendChild(el("span", { class: "muted since" }, " " + T.clockTime(op.since)));
    });
  }

  async function renderAttention() {
    const items = live.attention || [];
    const missing = items.map(function (i) { return i.client_id; })
      .filter(function (id) { return !(id in clientNames); });
    if (missing.length) {
      try {
        const answer = await api("GET", "/api/supervisor/client-names?ids=" +
          Array.from(new Set(missing)).slice(0, 200).join(","));
        Object.assign(clientNames, answer.names);
      } catch (err) {
        reportError(err);
      }
    }
    const names = {};
    live.operators.forEach(function (op) { names[op.user_id] = op.name; });
    const list = clear($("attention"));
    $("attention-empty").hidden = items.length > 0;
    items.forEach(function (item) {
      const overdue = item.overdue;  // the operators' yardstick: due + the rule's grace
      list.appendChild(el("li", {
        class: "attention-item" + (item.escalation_level > 0 ? " is-escalated" : ""),
        "data-client-id": item.client_id,
      },
        el("span", { class: "att-name" }, clientNames[item.client_id] || ("#" + item.client_id)),
        el("span", { class: "badge tier-badge tier-" + item.tier }, t(item.tier)),
        overdue ? el("span", { class: "badge badge-overdue" }, "● " + t("overdue")) : null,
        item.escalation_level > 0 ? el("span", { class: "badge badge-escalated" },
          "⚑ " + t("escalation level {n}", { n: item.escalation_level })) : null,
        el("span", { class: "att-due" }, t("Due") + ": " + T.formatTime(item.due_at)),
        el("span", { class: "att-owner muted" }, t("Owner") + ": " +
          (item.owner_id ? (names[item.owner_id] || "#" + item.owner_id) : t("unowned"))),
        item.reason ? el("span", { class: "att-reason muted" }, item.reason) : null));
    });
  }

  /* Missed calls nobody has returned yet, the longest waiting first (engine/missed_calls.py). */
  function renderMissed() {
    const items = live.missed || [];
    const list = clear($("missed"));
    $("missed-empty").hidden = items.length > 0;
    items.forEach(function (item) {
      const c = item.client;
      const number = item.written || item.number;
      const since = T.formatRecent(item.first_at);
      list.appendChild(el("li", { class: "attention-item", "data-number": item.number },
        el("span", { class: "att-name" }, c ? c.name : number),
        c ? el("span", { class: "badge tier-badge tier-" + c.tier }, t(c.tier))
          : el("span", { class: "muted" }, t("Unknown caller")),
        el("span", { class: "att-due" }, item.times > 1
          ? t("{n} missed calls since {time}", { n: item.times, time: since })
          : t("missed {time}", { time: since })),
        c ? el("span", { class: "att-owner muted" }, number) : null));
    });
  }

  function renderFunnel() {
    const box = clear($("funnel"));
    const entries = Object.entries(live.funnel || {}).sort(function (a, b) {
      return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
    });
    if (!entries.length) {
      box.appendChild(el("p", { class: "muted" }, t("No hand-overs today yet.")));
      return;
    }
    const max = Math.max.apply(null, entries.map(function (e) { return e[1]; }));
    entries.forEach(function (entry) {
      const parts = entry[0].split("->");
      const bar = el("span", { class: "bar-fill" });
      bar.style.width = Math.max(2, Math.round(100 * entry[1] / max)) + "%";  // CSSOM: CSP-safe
      box.appendChild(el("div", { class: "bar-row", "data-flow": entry[0] },
        el("span", { class: "bar-label" }, t(parts[0]) + " → " + t(parts[1] || "")),
        el("span", { class: "bar-track" }, bar),
        el("span", { class: "bar-value" }, entry[1])));
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    $("slice").addEventListener("change", function () { editing = null; loadFigures(); });
    loadFigures().then(loadLive);
    setInterval(loadLive, LIVE_MS);
    setInterval(function () { if (editing === null) loadFigures(); }, FIGURES_MS);
  });

  return { refresh: function () { return loadFigures().then(loadLive); } };
})();
