// Environments: list, create (admin), delete with a typed confirmation (admin).

import { seg } from "./api.js";
import { button, confirmTyped, h, replace, report, table, toast, when } from "./dom.js";

export async function render(ctx) {
  const { api, can, main, signal } = ctx;
  const { environments } = await api.get("/v1/environments", { signal });
  const list = h("div");
  const draw = (envs) => replace(list, table([
    { key: "name", label: "Name", render: (e) => h("a", { href: `#/env/${e.name}/secrets` }, e.name) },
    { key: "createdAt", label: "Created", render: (e) => when(e.createdAt) },
    can.admin ? {
      key: "actions", label: "", render: (e) => button("Delete", async () => {
        const ok = await confirmTyped(`Delete environment ${e.name}`,
          "Every secret, config entry, function and orchestration in it is deleted, and its values can never be opened again.",
          e.name);
        if (!ok) return;
        try {
          await api.delete(`/v1/environments/${seg(e.name)}`);
          toast(`Deleted environment ${e.name}.`);
          await ctx.refreshEnvironments();
          ctx.rerender();
        } catch (err) { report(err); }
      }, { kind: "danger" }),
    } : null,
  ].filter(Boolean), envs, { empty: "No environments." }));
  draw(environments);

  const name = h("input#new-env-name", {
    name: "name", required: true, pattern: "[a-z0-9][a-z0-9\\-]{0,62}", autocomplete: "off",
    placeholder: "production", "aria-describedby": "new-env-hint",
  });
  const create = can.admin ? h("form.toolbar#create-environment", {
    onsubmit: async (e) => {
      e.preventDefault();
      try {
        const created = await api.post("/v1/environments", { name: name.value });
        toast(`Created environment ${created.name}.`);
        name.value = "";
        await ctx.refreshEnvironments();
        ctx.rerender();
      } catch (err) { report(err); }
    },
  },
  h("label", { for: "new-env-name" }, "New environment"), name,
  h("button.primary", { type: "submit" }, "Create"),
  h("small.hint#new-env-hint", "Lowercase letters, digits and dashes.")) : null;

  replace(main, h("h1", "Environments"), create, list);
}
