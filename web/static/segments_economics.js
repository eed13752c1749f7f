/* Tierline segments page, Economics tab: success rate, calls, call time and cost per
   success per operator and on average for a range of days; the hourly costs they are
   computed from, editable in place; the same table as CSV. */
"use strict";

(function () {
  const T = window.Tierline;
  const t = T.t, el = T.el, clear = T.clear, api = T.api;
  const S = window.TierlineSegments;
  const $ = S.$;
  const DEFAULT_DAYS = 30;

  const state = { settings: null, report: null };

  function range() {
    return "from=" + encodeURIComponent($("eco-from").value) + "&to=" + encodeURIComponent($("eco-to").value);
  }

  function duration(seconds) {
    const h = Math.floor(seconds / 3600), m = Math.floor(seconds / 60) % 60, s = seconds % 60;
    const pad = function (n) { return String(n).padStart(2, "0"); };
    return h + ":" + pad(m) + ":" + pad(s);
  }

  function money(value) { return S.formatNumber(value, 2); }

  async function load(ev) {
    if (ev) ev.preventDefault();
    const error = $("eco-error");
    S.clearError(error);
    let report, settings;
    try {
      [report, settings] = await Promise.all([
        api("GET", "/api/economics?" + range()), api("GET", "/api/settings/economics"),
      ]);
    } catch (err) {
      S.formError(error, err);
      return;
    }
    state.report = report;
    state.settings = settings;
    $("eco-csv").href = "/api/economics.csv?" + range();
    $("eco-default").value = String(settings.default_hourly_cost);
    $("eco-currency").value = settings.currency;
    $("eco-currency-label").textContent = report.currency;
    render();
  }

  function line(row, kind) {
    const isOperator = kind === "operator";
    const override = isOperator ? (state.settings.hourly_cost || {})[String(row.user_id)] : undefined;
    const cost = isOperator ? el("input", {
      type: "number", min: "0", step: "any", class: "eco-cost", "data-user-id": row.user_id,
      "data-testid": "eco-cost", value: override === undefined ? "" : String(override),
      placeholder: String(state.settings.default_hourly_cost),
      "aria-label": t("Hourly cost of {name}", { name: row.display_name }),
    }) : "";
    const name = isOperator
      ? [row.display_name, " ", el("span", { class: "muted" }, row.username)]
      : t(kind === "average" ? "Average per working operator" : "Total");
    return el("tr", {
      class: isOperator ? "eco-row" : "eco-" + kind, "data-user-id": row.user_id,
      "data-username": row.username || null,
    },
      el("th", { scope: "row" }, name),
      el("td", { class: "num", "data-figure": "calls" }, String(row.calls)),
      el("td", { class: "num", "data-figure": "talk" }, duration(row.talk_s)),
      el("td", { class: "num", "data-figure": "successes" }, String(row.successes)),
      el("td", { class: "num", "data-figure": "invoices" }, String(row.invoices)),
      el("td", { class: "num", "data-figure": "success_rate" }, S.percent(row.success_rate)),
      el("td", { class: "num" }, cost),
      el("td", { class: "num", "data-figure": "cost" }, money(row.cost)),
      el("td", { class: "num", "data-figure": "cost_per_success" }, money(row.cost_per_success)));
  }

  function render() {
    const r = state.report;
    const body = clear($("eco-body"));
    r.operators.forEach(function (o) { body.appendChild(line(o, "operator")); });
    $("eco-empty").hidden = r.operators.length > 0;
    const foot = clear($("eco-foot"));
    foot.appendChild(line(r.average, "average"));
    foot.appendChild(line(r.total, "total"));
    $("economics").dataset.from = r.from;
    $("economics").dataset.to = r.to;
  }

  async function saveCosts(ev) {
    ev.preventDefault();
    const error = $("eco-error");
    S.clearError(error);
    const hourly = {};
    let bad = false;
    document.querySelectorAll("#eco-body input.eco-cost").forEach(function (input) {
      if (input.value.trim() === "") return;
      const n = Number(input.value);
      if (Number.isNaN(n)) bad = true;
      hourly[input.dataset.userId] = n;
    });
    const fallback = Number($("eco-default").value || 0);
    if (bad || Number.isNaN(fallback)) {
      S.formError(error, new Error(t("Hourly costs are numbers of 0 or more.")));
      return;
    }
    // Costs of operators not shown in this range stay as they were.
    const body = {
      default_hourly_cost: fallback,
      currency: $("eco-currency").value.trim().toUpperCase(),
      hourly_cost: Object.assign({}, state.settings.hourly_cost || {}, hourly),
    };
    document.querySelectorAll("#eco-body input.eco-cost").forEach(function (input) {
      if (input.value.trim() === "") delete body.hourly_cost[input.dataset.userId];
    });
    try {
      await api("PUT", "/api/settings/economics", body);
      T.flash(t("Costs saved."), "info");
    } catch (err) {
      S.formError(error, err);
      return;
    }
    await load();
  }

  S.parts.push(function start() {
    const today = new Date();
    const from = new Date(today.getTime());
    from.setDate(from.getDate() - (DEFAULT_DAYS - 1));
    $("eco-from").value = S.isoDay(from);
    $("eco-to").value = S.isoDay(today);
    $("eco-range").addEventListener("submit", load);
    $("eco-settings").addEventListener("submit", saveCosts);
    load();
  });
})();
