/* Tierline segments page, Campaigns tab: the campaigns and their status, the form that
   creates one (segment, entry state, which of the tier's operators will call, dates,
   control share), the launch with its result and who was given how many clients, and the
   report: control group, funnel, responses. The operators' part is
   segments_campaign_operators.js. */
"use strict";

(function () {
  const T = window.Tierline;
  const t = T.t, el = T.el, clear = T.clear, api = T.api;
  const S = window.TierlineSegments;
  const $ = S.$;
  const Ops = window.TierlineCampaignOperators;
  const SKIP_REASONS = {
    do_not_call: "do not call", final_state: "in a final state", other_tier: "working in another tier",
  };

  const state = { campaigns: [], entryStates: [], current: null };

  function segmentName(c) {
    if (c.filter_id !== null) {
      const f = S.filters.find(function (x) { return x.id === c.filter_id; });
      return t("filter") + " " + (f ? f.name : "#" + c.filter_id);
    }
    const g = S.groups.find(function (x) { return x.id === c.group_id; });
    return t("group") + " " + (g ? g.name : "#" + c.group_id);
  }

  function fillSegments() {
    const select = $("campaign-segment");
    const keep = select.value;
    clear(select).appendChild(el("option", { value: "" }, t("choose…")));
    const filters = el("optgroup", { label: t("Saved filters") });
    S.filters.forEach(function (f) { filters.appendChild(el("option", { value: "filter:" + f.id }, f.name)); });
    const groups = el("optgroup", { label: t("Groups") });
    S.groups.forEach(function (g) {
      groups.appendChild(el("option", { value: "group:" + g.id },
        g.name + " (" + T.tn(g.size, "{n} member", "{n} members") + ")"));
    });
    select.appendChild(filters);
    select.appendChild(groups);
    select.value = keep;
  }

  function fillEntryStates() {
    const select = $("campaign-entry");
    const keep = select.value;
    const mailing = $("campaign-kind").value === "mailing_follow_up";
    clear(select).appendChild(el("option", { value: "" }, t("choose…")));
    const byTier = {};
    state.entryStates.filter(function (s) { return !mailing || s.mailing; }).forEach(function (s) {
      if (!byTier[s.tier]) byTier[s.tier] = select.appendChild(el("optgroup", { label: s.tier }));
      byTier[s.tier].appendChild(el("option", { value: s.name, "data-tier": s.tier },
        s.title + " (" + s.name + ")"));
    });
    select.value = keep;
    showOperators();
  }

  /* Who will make the calls: a campaign's calls go to its entry state's tier. */
  function showOperators() {
    const chosen = state.entryStates.find(function (s) { return s.name === $("campaign-entry").value; });
    Ops.show(chosen ? chosen.tier : null);
  }

  async function loadCampaigns() {
    try {
      state.campaigns = (await api("GET", "/api/campaigns")).campaigns;
    } catch (err) {
      T.showError(err);
      return;
    }
    renderList();
  }

  function renderList() {
    const body = clear($("campaigns-body"));
    $("campaigns-empty").hidden = state.campaigns.length > 0;
    state.campaigns.forEach(function (c) {
      const dates = c.starts_on || c.ends_on
        ? [c.starts_on, c.ends_on].map(function (d) { return d || "…"; }).join(" – ") : "—";
      body.appendChild(el("tr", {
        class: "campaign-row" + (state.current === c.id ? " is-active" : ""),
        "data-campaign-id": c.id, "data-status": c.status,
      },
        el("td", {}, el("button", {
          type: "button", class: "link", "data-testid": "campaign-open",
          onclick: function () { openCampaign(c.id); },
        }, c.name)),
        el("td", {}, segmentName(c)),
        el("td", {}, S.stateTitle(c.entry_state), " ", el("span", { class: "badge tier-" + c.tier }, c.tier)),
        el("td", {}, el("span", { class: "badge status-" + c.status, "data-testid": "campaign-status" },
          t(c.status))),
        el("td", { class: "num" }, String(c.arms.called)),
        el("td", { class: "num" }, String(c.arms.control)),
        el("td", {}, S.percent(c.holdout_share, 0)),
        el("td", {}, dates)));
    });
  }

  async function createCampaign(ev) {
    ev.preventDefault();
    const error = $("campaign-error");
    S.clearError(error);
    const segment = $("campaign-segment").value.split(":");
    const share = $("campaign-share").value.trim();
    const body = {
      name: $("campaign-name").value.trim(),
      kind: $("campaign-kind").value,
      entry_state: $("campaign-entry").value,
      holdout_share: share === "" ? 0 : Number(share) / 100,
      starts_on: $("campaign-starts").value || null,
      ends_on: $("campaign-ends").value || null,
      description: $("campaign-description").value.trim(),
    };
    if (segment[0] === "filter") body.filter_id = Number(segment[1]);
    if (segment[0] === "group") body.group_id = Number(segment[1]);
    if (Number.isNaN(body.holdout_share)) {
      S.formError(error, new Error(t("The control share is a number of per cent.")));
      return;
    }
    body.operator_ids = Ops.chosen();
    if (body.operator_ids === null) {
      S.formError(error, new Error(t("Tick at least one operator to take the calls.")));
      return;
    }
    try {
      const row = await api("POST", "/api/campaigns", body);
      $("campaign-form").reset();
      Ops.reset();  // drawn again, all ticked, for the next campaign
      fillEntryStates();
      T.flash(t("Campaign {name} created.", { name: row.name }), "info");
      await loadCampaigns();
      await openCampaign(row.id);
    } catch (err) {
      S.formError(error, err);
    }
  }

  async function openCampaign(id) {
    const c = state.campaigns.find(function (x) { return x.id === id; });
    if (!c) return;
    state.current = id;
    renderList();
    const detail = $("campaign-detail");
    detail.hidden = false;
    detail.dataset.campaignId = String(id);
    $("campaign-title").textContent = c.name;
    $("campaign-summary").textContent = t("{segment}, entering {state}; {share} held back as the control group.", {
      segment: segmentName(c), state: S.stateTitle(c.entry_state), share: S.percent(c.holdout_share, 0),
    });
    $("campaign-operator-names").textContent = Ops.describe(c.operator_ids);
    const launch = $("campaign-launch");
    launch.hidden = c.status !== "draft";
    launch.disabled = false;
    launch.textContent = t("Launch");
    if (state.shownLaunch !== id) $("launch-result").hidden = true;
    $("report").hidden = c.status === "draft";
    if (c.status !== "draft") {
      window.TierlineCampaignReport.show(id, $("members-arm").value);
    }
  }

  async function launch() {
    const id = state.current;
    const button = $("campaign-launch");
    const result = $("launch-result");
    button.disabled = true;
    button.textContent = t("Launching…");
    result.hidden = false;
    result.dataset.kind = "busy";
    result.textContent = t("Launching…");
    let answer;
    try {
      answer = await api("POST", "/api/campaigns/" + id + "/launch");
    } catch (err) {
      result.dataset.kind = "error";
      result.textContent = err.message;
      button.disabled = false;
      button.textContent = t("Launch");
      if (err.status === 401) T.showError(err);
      return;
    }
    const l = answer.launch;
    const skipped = Object.keys(l.skipped).map(function (reason) {
      return t(SKIP_REASONS[reason] || reason) + ": " + l.skipped[reason].count;
    });
    result.dataset.kind = "done";
    result.textContent = T.tn(l.called,
      "Launched: {n} client put into the workflow, {control} held back as the control group.",
      "Launched: {n} clients put into the workflow, {control} held back as the control group.",
      { control: l.control }) + " " +
      (skipped.length ? t("Skipped: {reasons}.", { reasons: skipped.join(", ") }) : t("Nobody was skipped.")) +
      " " + Ops.assignment(l);
    state.shownLaunch = id;
    await loadCampaigns();
    await openCampaign(id);
  }

  S.parts.push(function start() {
    $("campaign-form").addEventListener("submit", createCampaign);
    $("campaign-kind").addEventListener("change", fillEntryStates);
    $("campaign-entry").addEventListener("change", showOperators);
    $("campaign-launch").addEventListener("click", launch);
    S.on("filters", function () { fillSegments(); renderList(); });
    S.on("groups", function () { fillSegments(); renderList(); });
    S.on("workflow", renderList);
    S.on("campaign-changed", loadCampaigns);
    Promise.all([
      api("GET", "/api/campaigns/entry-states"), api("GET", "/api/users"),
    ]).then(function (answers) {
      state.entryStates = answers[0].states;
      Ops.setUsers(answers[1].users);
      fillEntryStates();
    }).catch(T.showError);
    loadCampaigns();
  });

  S.campaigns = { current: function () { return state.current; } };
})();
