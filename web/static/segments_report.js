/* Tierline segments page, a launched campaign's report: the called and the control group
   side by side, what the calls added with its 95 % confidence interval in plain words,
   the funnel per group, and the members with their recorded responses. */
"use strict";

window.TierlineCampaignReport = (function () {
  const T = window.Tierline;
  const t = T.t, el = T.el, clear = T.clear, api = T.api;
  const S = window.TierlineSegments;
  const $ = S.$;
  const PAGE = 50;
  const RESPONSES = { accepted: "accepted", declined: "declined", no_response: "no response" };

  const state = { id: null, members: null, seq: 0 };

  async function show(id, arm) {
    if (state.id !== id) state.members.reset();
    state.id = id;
    await Promise.all([loadReport(), loadMembers(arm)]);
  }

  async function loadReport() {
    const id = state.id;
    let report;
    try {
      report = await api("GET", "/api/campaigns/" + id + "/report");
    } catch (err) {
      T.showError(err);
      return;
    }
    if (id !== state.id) return;
    const cg = report.control_group;
    const body = clear($("report-body"));
    [["called", t("Called")], ["control", t("Control group (not called)")]].forEach(function (a) {
      const arm = cg[a[0]];
      body.appendChild(el("tr", { "data-arm": a[0] },
        el("th", { scope: "row" }, a[1]),
        el("td", { class: "num", "data-testid": "arm-members" }, String(arm.members)),
        el("td", { class: "num", "data-testid": "arm-conversions" }, String(arm.conversions)),
        el("td", { class: "num" }, S.percent(arm.conversion_rate)),
        el("td", { class: "num" }, S.formatNumber(arm.revenue, 2)),
        el("td", { class: "num" }, S.formatNumber(arm.revenue_per_member, 2))));
    });
    $("report-conversion").textContent = conversionSentence(cg);
    $("report-revenue").textContent = revenueSentence(cg);
    renderFunnel(report.funnel);
    $("report").dataset.loaded = String(++state.seq);
  }

  function points(x) { return S.formatNumber(x * 100, 1, true); }

  function conversionSentence(cg) {
    const d = cg.conversion_diff;
    if (!d) return t("Not enough members in both groups to compare conversion yet.");
    const text = t("Calls added {diff} percentage points of conversion (95 % CI {low} to {high}).", {
      diff: points(d.estimate), low: points(d.low), high: points(d.high),
    });
    const lift = cg.lift === null ? "" : " " + t("Relative lift: {lift}.", { lift: S.percent(cg.lift, 0) });
    return text + lift + " " + (cg.significant ? t("The difference is significant.")
      : t("The interval includes zero: no effect is proven yet."));
  }

  function revenueSentence(cg) {
    const d = cg.revenue_diff;
    if (!d) return t("Revenue: too few members in a group for an interval.");
    return t("Revenue per member: calls added {diff} (95 % CI {low} to {high}).", {
      diff: S.formatNumber(d.estimate, 2, true), low: S.formatNumber(d.low, 2, true),
      high: S.formatNumber(d.high, 2, true),
    });
  }

  function renderFunnel(funnel) {
    const body = clear($("report-funnel-body"));
    const tiers = (funnel.called || []).map(function (s) { return s.tier; });
    tiers.forEach(function (tier, i) {
      const cell = function (arm) {
        const stage = (funnel[arm] || [])[i];
        if (!stage) return el("td", { class: "num" }, "—");
        const days = stage.median_days === null ? "" : " · " + t("median {days} d", {
          days: S.formatNumber(stage.median_days, 1),
        });
        return el("td", { class: "num" }, stage.reached + " (" + S.percent(stage.share, 0) + ")" + days);
      };
      body.appendChild(el("tr", {}, el("th", { scope: "row" }, tier), cell("called"), cell("control")));
    });
  }

  async function loadMembers(arm) {
    const id = state.id;
    let page;
    try {
      page = await api("GET", "/api/campaigns/" + id + "/members?limit=" + PAGE + "&after_id=" +
        state.members.after() + (arm ? "&arm=" + encodeURIComponent(arm) : ""));
    } catch (err) {
      T.showError(err);
      return;
    }
    if (id !== state.id) return;
    const body = clear($("campaign-members-body"));
    page.members.forEach(function (m) { body.appendChild(memberRow(m)); });
    state.members.update(page.next_after);
  }

  function memberRow(m) {
    const response = el("select", { "aria-label": t("Response of {name}", { name: m.client.name }),
      "data-testid": "member-response" }, el("option", { value: "" }, t("no answer recorded")));
    Object.keys(RESPONSES).forEach(function (r) {
      response.appendChild(el("option", { value: r }, t(RESPONSES[r])));
    });
    response.value = m.response || "";
    const revenue = el("input", {
      type: "number", min: "0", step: "any", class: "revenue-input", "data-testid": "member-revenue",
      value: m.revenue === null ? "" : String(m.revenue), "aria-label": t("Revenue of {name}", { name: m.client.name }),
    });
    const save = el("button", { type: "button", "data-testid": "member-save" }, t("Save"));
    save.addEventListener("click", async function () {
      save.disabled = true;
      try {
        await api("POST", "/api/campaigns/" + state.id + "/responses", {
          client_id: m.client_id, response: response.value || null,
          revenue: revenue.value === "" ? null : Number(revenue.value),
        });
        T.flash(t("Response recorded."), "info");
        await loadReport();
      } catch (err) {
        T.showError(err);
      } finally {
        save.disabled = false;
      }
    });
    return el("tr", { class: "member-row", "data-client-id": m.client_id, "data-arm": m.arm },
      el("td", { class: "client-name" }, m.client.name),
      el("td", {}, m.arm === "control" ? t("control") : t("called")),
      el("td", {}, response), el("td", {}, revenue), el("td", {}, save));
  }

  S.parts.push(function start() {
    const reload = function () { loadMembers($("members-arm").value); };
    state.members = S.pager($("campaign-members-prev"), $("campaign-members-next"), reload);
    $("members-arm").addEventListener("change", function () {
      state.members.reset();
      reload();
    });
  });

  return { show: show };
})();
