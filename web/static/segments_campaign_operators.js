/* Tierline segments page, the operators of a campaign: the new-campaign form's checkboxes
   (every active operator of the entry state's tier, all ticked at first), the sentence
   naming a campaign's operators, and the launch's assignment in words.

   None ticked is refused by the form: a supervisor who unticks everyone has not chosen
   "anyone". The API's [] (the tier's pool) is sent only when the tier has no active
   operator, which the form says plainly. */
"use strict";

window.TierlineCampaignOperators = (function () {
  const T = window.Tierline;
  const t = T.t, el = T.el, clear = T.clear;
  const $ = window.TierlineSegments.$;
  const NOT_DRAWN = {};  // no tier drawn yet: differs from every tier and from "none chosen"

  const state = { users: [], tier: NOT_DRAWN };

  function name(id) {
    const u = state.users.find(function (x) { return x.id === id; });
    return u ? (u.display_name || u.username) : "#" + id;
  }

  function ofTier(tier) {
    return state.users.filter(function (u) {
      return u.role === "operator" && u.active && u.tier === tier;
    });
  }

  /* The boxes for ``tier`` (null: no entry state chosen). Drawn again only when the tier
     changes, so the ticks survive a change of kind or of state within the tier. */
  function show(tier) {
    if (tier === state.tier) return;
    state.tier = tier;
    const note = $("campaign-operators");
    const list = clear($("campaign-operator-list"));
    if (tier === null) {
      note.textContent = t("Choose an entry state to see who will call.");
      return;
    }
    const operators = ofTier(tier);
    note.textContent = operators.length
      ? t("Tier {tier}: the ticked operators share the clients; a client's own operator on the tier keeps them.", { tier: tier })
      : t("Tier {tier} has no active operators: nobody will take these calls.", { tier: tier });
    operators.forEach(function (u) {
      list.appendChild(el("label", { class: "check" },
        el("input", { type: "checkbox", checked: true, value: String(u.id),
          "data-testid": "campaign-operator", "data-username": u.username }),
        " ", u.display_name || u.username));
    });
  }

  /* The ticked operators' ids; null when the tier has operators and none is ticked. */
  function chosen() {
    const boxes = Array.from($("campaign-operator-list").querySelectorAll("input[type=checkbox]"));
    const ids = boxes.filter(function (b) { return b.checked; }).map(function (b) { return Number(b.value); });
    return boxes.length && !ids.length ? null : ids;
  }

  function describe(ids) {
    return ids.length
      ? t("Operators: {names}.", { names: ids.map(name).join(", ") })
      : t("Operators: anyone on the tier (its pool).");
  }

  /* The launch answer's assignment: how many clients each operator was given. */
  function assignment(launch) {
    const ids = Object.keys(launch.assigned);
    if (!ids.length) return t("The first calls wait in the tier's pool.");
    const parts = ids.map(function (id) { return name(Number(id)) + ": " + launch.assigned[id]; });
    let text = t("Assigned: {list}.", { list: parts.join(", ") });
    if (launch.kept_owner) text += " " + t("{n} kept their own operator.", { n: launch.kept_owner });
    if (launch.unavailable_operators.length) {
      text += " " + t("No longer active on the tier, given none: {names}.",
        { names: launch.unavailable_operators.map(name).join(", ") });
    }
    return text;
  }

  return {
    setUsers: function (users) { state.users = users; state.tier = NOT_DRAWN; },
    reset: function () { state.tier = NOT_DRAWN; },
    show: show, chosen: chosen, describe: describe, assignment: assignment,
  };
})();
