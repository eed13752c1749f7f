/* Tierline filter criteria editor: typed controls for the model in segments_criteria.js —
   a field, an operator that fits the field's type, a value control that fits both — in
   nested groups; every edit reports back so the page can count the matching clients. */
"use strict";

(function () {
  const T = window.Tierline;
  const t = T.t, el = T.el, clear = T.clear;
  const C = window.TierlineCriteria;
  const FIELDS = C.FIELDS, OPS = C.OPS, OP_LABELS = C.OP_LABELS, TYPE_LABELS = C.TYPE_LABELS;
  const KINDS = C.KINDS, group = C.group, leaf = C.leaf, fieldDef = C.fieldDef;
  const choices = C.choices, load = C.load, serialize = C.serialize, nodeForPath = C.nodeForPath;

  function create(container, changed) {
    const editor = { root: group("all", []) };

    function render() {
      clear(container).appendChild(renderGroup(editor.root, null));
    }

    function structural() {
      render();
      changed();
    }

    function renderGroup(node, parent) {
      const kind = el("select", {
        class: "cond-kind", "data-testid": "cond-kind", "aria-label": t("Clients matching"),
        onchange: function () { node.kind = kind.value; changed(); },
      });
      KINDS.forEach(function (k) { kind.appendChild(el("option", { value: k[0] }, t(k[1]))); });
      kind.value = node.kind;
      const items = el("ul", { class: "cond-list" });
      node.children.forEach(function (child) {
        items.appendChild(el("li", {}, child.type === "leaf" ? renderLeaf(child, node)
          : renderGroup(child, node)));
      });
      if (!node.children.length && parent === null) {
        items.appendChild(el("li", { class: "muted" }, t("No conditions: every client matches.")));
      }
      return el("div", { class: "cond-group", "data-node": node.id, "data-testid": "cond-group" },
        el("div", { class: "cond-group-head" }, el("span", {}, t("Clients matching")), kind,
          parent === null ? null : el("button", {
            type: "button", class: "link cond-remove", "data-testid": "cond-group-remove",
            onclick: function () { remove(parent, node); },
          }, t("Remove group"))),
        items,
        el("div", { class: "cond-add" },
          el("button", {
            type: "button", "data-testid": "add-condition",
            onclick: function () { node.children.push(leaf("tier", "eq", "")); structural(); },
          }, "+ " + t("Condition")),
          el("button", {
            type: "button", "data-testid": "add-group",
            onclick: function () {
              node.children.push(group(node.kind === "all" ? "any" : "all", [leaf("tier", "eq", "")]));
              structural();
            },
          }, "+ " + t("Group of conditions"))));
    }

    function remove(parent, node) {
      parent.children.splice(parent.children.indexOf(node), 1);
      structural();
    }

    function renderLeaf(node, parent) {
      const f = fieldDef(node.field);
      const field = el("select", {
        class: "cond-field", "data-testid": "cond-field", "aria-label": t("Field"),
        onchange: function () {
          node.field = field.value;
          node.op = OPS[fieldDef(node.field).type][0];
          node.value = "";
          structural();
        },
      });
      FIELDS.concat(FIELDS.some(function (x) { return x.name === f.name; }) ? [] : [f])
        .forEach(function (x) { field.appendChild(el("option", { value: x.name }, t(x.label))); });
      field.value = node.field;
      const op = el("select", {
        class: "cond-op", "data-testid": "cond-op", "aria-label": t("Condition"),
        onchange: function () {
          const wasList = node.op === "in";
          node.op = op.value;
          if (wasList !== (node.op === "in")) node.value = "";
          structural();
        },
      });
      // An operator this page would not offer (a filter saved through the API) stays shown.
      const ops = OPS[f.type].indexOf(node.op) < 0 ? OPS[f.type].concat([node.op]) : OPS[f.type];
      ops.forEach(function (o) {
        const label = (TYPE_LABELS[f.type] && TYPE_LABELS[f.type][o]) || OP_LABELS[o] || o;
        op.appendChild(el("option", { value: o }, t(label)));
      });
      op.value = node.op;
      const key = f.type === "custom" ? el("input", {
        type: "text", class: "cond-key", "data-testid": "cond-key", value: node.key,
        placeholder: t("field name"), "aria-label": t("Custom field name"), maxlength: "64",
        oninput: function () { node.key = key.value; changed(); },
      }) : null;
      return el("div", { class: "cond-row", "data-node": node.id, "data-testid": "condition" },
        field, key, op, valueControl(node, f),
        el("button", {
          type: "button", class: "link cond-remove", "data-testid": "cond-remove",
          "aria-label": t("Remove condition"), onclick: function () { remove(parent, node); },
        }, "✕"));
    }

    function valueControl(node, f) {
      if (node.op === "empty" || node.op === "set") return null;
      const attrs = { class: "cond-value", "data-testid": "cond-value", "aria-label": t("Value") };
      if (f.type === "choice") {
        const select = el("select", Object.assign(attrs, {
          multiple: node.op === "in",
          onchange: function () {
            node.value = node.op === "in"
              ? Array.from(select.selectedOptions).map(function (o) { return o.value; })
              : select.value;
            changed();
          },
        }));
        if (node.op !== "in") select.appendChild(el("option", { value: "" }, t("choose…")));
        choices(node.field).forEach(function (c) {
          select.appendChild(el("option", { value: c[0] }, c[1]));
        });
        if (node.op === "in") {
          const chosen = Array.isArray(node.value) ? node.value : [];
          Array.from(select.options).forEach(function (o) { o.selected = chosen.indexOf(o.value) >= 0; });
          select.size = Math.min(5, select.options.length);
        } else {
          select.value = node.value || "";
        }
        return select;
      }
      const type = f.type === "date" ? "date" : f.type === "number" && node.op !== "in" ? "number" : "text";
      const input = el("input", Object.assign(attrs, {
        type: type, value: Array.isArray(node.value) ? node.value.join(", ") : node.value,
        placeholder: node.op === "in" ? t("a, b, c") : "",
        min: type === "number" ? "0" : null, step: type === "number" ? "1" : null,
        oninput: function () { node.value = input.value; changed(); },
      }));
      return input;
    }

    function mark(ids, className) {
      container.querySelectorAll("." + className).forEach(function (n) { n.classList.remove(className); });
      ids.forEach(function (id) {
        const node = container.querySelector('[data-node="' + id + '"]');
        if (node) node.classList.add(className);
      });
    }

    editor.load = function (criteria) { editor.root = load(criteria); render(); };
    editor.serialize = function () { return serialize(editor.root); };
    editor.markIncomplete = function (ids) { mark(ids, "is-incomplete"); };
    editor.markError = function (paths, path) {
      const id = nodeForPath(paths, path);
      mark(id === null ? [] : [id], "has-error");
    };
    editor.render = render;
    render();
    return editor;
  }

  C.create = create;
})();
