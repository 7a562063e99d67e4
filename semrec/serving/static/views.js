// The page's views. Each takes the route's parameters and the <main> element, renders a
// form at once and its results as soon as the API answers.

import { get, loadImage, post, query } from "./api.js";
import { card, grid, h, markResults, picture, price, productHref, showError, stockBadge }
  from "./ui.js";

let categories = null;  // fetched once per page load

function categoryOptions(selected) {
  const select = h("select", { id: "f-category", name: "category" },
    h("option", { value: "" }, "Any category"));
  (categories ??= get("/categories").then((r) => r.categories).catch(() => []))
    .then((list) => {
      for (const c of list) {
        select.append(h("option", { value: c.name, selected: c.name === selected },
                        `${c.name} (${c.products})`));
      }
    });
  return select;
}

function field(label, control) {
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control);
}

function slider(id, value, onChange) {
  const output = h("output", { for: id, id: `${id}-value` }, Number(value).toFixed(1));
  const input = h("input", { id, type: "range", min: 0, max: 1, step: 0.1, value,
                             name: "diversity" });
  input.addEventListener("input", () => { output.textContent = Number(input.value).toFixed(1); });
  if (onChange) input.addEventListener("change", () => onChange(Number(input.value)));
  return [input, output];
}

function formParams(form) {
  const params = {};
  for (const [name, value] of new FormData(form)) if (String(value).trim()) params[name] = String(value).trim();
  return params;
}

function filtersOf(p) {
  return { category: p.category, min_price: p.min_price, max_price: p.max_price,
           in_stock: p.in_stock ? "true" : "", diversity: p.diversity };
}

async function results(section, load, render) {
  section.setAttribute("aria-busy", "true");
  try {
    const data = await load();
    section.replaceChildren(render(data));
    markResults();
    showError(null);
  } catch (error) {
    section.replaceChildren(h("p", { class: "error" }, error.message));
  } finally {
    section.removeAttribute("aria-busy");
  }
}

// -- Search -------------------------------------------------------------------------------
export function search(main, p) {
  const q = h("input", { id: "q", name: "q", type: "search", value: p.q || "",
                         placeholder: "e.g. a quiet espresso machine for a small kitchen",
                         maxlength: 500, autocomplete: "off" });
  const [div, divOut] = slider("f-diversity", p.diversity || 0);
  const form = h("form", { role: "search", class: "filters", "aria-label": "Search products" },
    h("div", { class: "searchbar" },
      h("label", { for: "q", class: "visually-hidden" }, "Search products"), q,
      h("button", { type: "submit" }, "Search")),
    h("details", { open: Boolean(p.category || p.min_price || p.max_price || p.in_stock ||
                                 p.user_id || Number(p.diversity)) },
      h("summary", {}, "Filters"),
      h("div", { class: "filter-row" },
        field("Category", categoryOptions(p.category)),
        field("Min price", h("input", { id: "f-min", name: "min_price", type: "number",
                                        min: 0, step: "any", value: p.min_price || "",
                                        inputmode: "decimal" })),
        field("Max price", h("input", { id: "f-max", name: "max_price", type: "number",
                                        min: 0, step: "any", value: p.max_price || "",
                                        inputmode: "decimal" })),
        h("div", { class: "field check" },
          h("input", { id: "f-stock", name: "in_stock", type: "checkbox", value: "1",
                       checked: Boolean(p.in_stock) }),
          h("label", { for: "f-stock" }, "In stock only")),
        h("div", { class: "field" }, h("label", { for: "f-diversity" }, "Diversity"),
          h("div", { class: "range" }, div, divOut)),
        field("Personalise for user", h("input", { id: "f-user", name: "user_id",
                                                   value: p.user_id || "",
                                                   placeholder: "e.g. U001" })))));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `#/${query(formParams(form))}`;
  });
  const heading = h("h2", { id: "results-title" }, p.q ? `Results for “${p.q}”` : "Popular now");
  const section = h("section", { "aria-labelledby": "results-title", class: "results-wrap" },
                    h("p", { class: "muted" }, "Loading…"));
  main.replaceChildren(form, heading, section);
  const filters = filtersOf(p);
  if (p.q) {
    results(section, () => get(`/search${query({ q: p.q, k: 24, user_id: p.user_id,
                                                 ...filters })}`),
            (r) => h("div", {}, r.personalised
              ? h("p", { class: "muted" }, `Re-ranked for ${r.user_id}'s taste.`) : null,
              grid(r.items)));
  } else {
    results(section, () => get(`/popular${query({ k: 24, ...filters, diversity: undefined })}`),
            (r) => grid(r.items));
  }
}

// -- Product ------------------------------------------------------------------------------
export function product(main, p) {
  const id = p.id;
  const info = h("section", { class: "product", "aria-label": "Product" },
                 h("p", { class: "muted" }, "Loading…"));
  const similarList = h("div", { class: "similar-list" }, h("p", { class: "muted" }, "Loading…"));
  // by: both (the fused vector), image ("looks like this") or text; kept in the URL
  const state = { diversity: Number(p.diversity || 0), by: p.by || "both" };
  const remember = () => history.replaceState(null, "", `${productHref(id)}${query({
    diversity: state.diversity || "", by: state.by === "both" ? "" : state.by })}`);
  const load = () => results(similarList,
    () => get(`/items/${encodeURIComponent(id)}/similar${query({ k: 8, ...state })}`),
    (r) => grid(r.items));
  const [div, divOut] = slider("similar-diversity", state.diversity, (value) => {
    state.diversity = value;
    remember();
    load();
  });
  const by = h("select", { id: "similar-by", name: "by", onchange: () => {
    state.by = by.value;
    remember();
    load();
  } }, [["both", "Look and text"], ["image", "Look"], ["text", "Text"]].map(([value, label]) =>
    h("option", { value, selected: value === state.by }, label)));
  main.replaceChildren(info, h("section", { "aria-labelledby": "similar-title" },
    h("div", { class: "section-head" }, h("h2", { id: "similar-title" }, "Similar items"),
      h("div", { class: "field inline" }, h("label", { for: "similar-by" }, "Similar by"), by),
      h("div", { class: "field inline" }, h("label", { for: "similar-diversity" },
        "Diversity"), h("div", { class: "range" }, div, divOut))),
    similarList));
  get(`/items/${encodeURIComponent(id)}`).then((item) => {
    const skip = new Set(["product_id", "title", "image_url", "description", "attributes",
                          "price", "in_stock", "category"]);
    const rows = [["Product ID", item.product_id], ["Category", item.category],
                  ["Price", price(item.price)],
                  ...Object.entries(item).filter(([k]) => !skip.has(k)),
                  ...Object.entries(item.attributes || {})].filter(([, v]) => v !== undefined && v !== "");
    info.replaceChildren(
      h("div", { class: "product-pic" }, picture(item, "large")),
      h("div", { class: "product-text" },
        h("h2", {}, item.title), stockBadge(item),
        item.description ? h("p", {}, item.description) : null,
        h("dl", { class: "fields" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])),
        h("p", {}, h("a", { href: `#/${query({ q: item.title })}` }, "Search for products like this"))));
    document.title = `${item.title} · semrec`;
  }).catch((error) => info.replaceChildren(h("p", { class: "error" }, error.message)));
  load();
}

// -- Shopper ------------------------------------------------------------------------------
function userForm(p, target, label = "Show feed") {
  const input = h("input", { id: "user", name: "user", value: p.user || "", required: true,
                             placeholder: "e.g. U001", autocomplete: "off" });
  const form = h("form", { class: "filters inline-form" }, field("User ID", input),
                 h("button", { type: "submit" }, label));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `${target}/${encodeURIComponent(input.value.trim())}`;
  });
  return form;
}

function when(ts) {
  if (ts < 1e9) return `#${ts + 1}`;  // an ordinal timestamp: order only
  return new Date(ts * 1000).toLocaleDateString(undefined, { year: "numeric", month: "short",
                                                            day: "numeric" });
}

export function shopper(main, p) {
  const form = userForm(p, "#/shopper");
  if (!p.user) {
    main.replaceChildren(h("h2", {}, "Shopper view"), form,
      h("p", { class: "muted" }, "Enter a user ID to see their personalised feed and history."));
    return;
  }
  const feed = h("section", { "aria-labelledby": "feed-title" }, h("p", { class: "muted" }, "Loading…"));
  const past = h("section", { "aria-labelledby": "history-title", class: "history" },
                 h("h2", { id: "history-title" }, "Recent history"), h("p", { class: "muted" }, "Loading…"));
  main.replaceChildren(h("h2", {}, `Shopper ${p.user}`), form, h("div", { class: "shopper" }, feed, past));
  const user = encodeURIComponent(p.user);
  const historyReq = get(`/users/${user}/history?limit=100`);
  results(feed, async () => [await get(`/users/${user}/feed?k=12`), await historyReq],
    ([r, hist]) => {
      const byId = new Map();
      for (const event of hist.items) if (!byId.has(event.product_id)) byId.set(event.product_id, event);
      const because = (item) => {
        const source = item.because && byId.get(item.because);
        if (!item.because) return [];
        const verb = source && source.event === "purchase" ? "bought" : "viewed";
        const title = source?.title || item.because;
        return [h("a", { class: "because", href: productHref(item.because) },
          source ? picture(source, "thumb") : null,
          h("span", {}, `because you ${verb} `, h("strong", {}, title)))];
      };
      return h("div", {},
        h("h2", { id: "feed-title" }, r.personalised ? "Recommended for this shopper"
                                                     : "Popular (no history yet)"),
        r.personalised ? h("p", { class: "muted" }, `From ${r.history_size} interactions.`) : null,
        grid(r.items, because));
    });
  historyReq.then((hist) => {
    const shown = hist.items.slice(0, 10);
    past.replaceChildren(past.firstChild, shown.length
      ? h("ol", { class: "events" }, shown.map((e) => h("li", {},
          e.known ? picture(e, "thumb") : null,
          h("span", { class: "event-text" },
            h("a", { href: productHref(e.product_id) }, e.title || e.product_id),
            h("span", { class: "muted" }, ` ${e.event.replaceAll("_", " ")} · ${when(e.timestamp)}`)))))
      : h("p", { class: "muted" }, "No events yet."));
  }).catch((error) => past.replaceChildren(past.firstChild, h("p", { class: "error" }, error.message)));
}

// -- Ads ----------------------------------------------------------------------------------
export function ads(main, p) {
  const user = h("input", { id: "ad-user", name: "user", value: p.user || "U001", required: true });
  const kind = p.kind === "products" ? "products" : "category";
  const radio = (value, label) => h("label", { class: "radio" },
    h("input", { type: "radio", name: "kind", value, checked: kind === value }), label);
  const ids = h("textarea", { id: "ad-ids", name: "ids", rows: 3,
                              placeholder: "P0001, P0002, …" }, p.ids || "");
  const form = h("form", { class: "filters ads-form", "aria-label": "Campaign" },
    h("div", { class: "filter-row" },
      field("Shopper (user ID)", user),
      field("Slots", h("input", { id: "ad-slots", name: "slots", type: "number", min: 1, max: 100,
                                  value: p.slots || 4, required: true }))),
    h("fieldset", {}, h("legend", {}, "Campaign"),
      radio("category", "A category and a price cap"), radio("products", "A list of products"),
      h("div", { class: "filter-row" },
        field("Category", categoryOptions(p.category)),
        field("Max price", h("input", { id: "ad-max", name: "max_price", type: "number", min: 0,
                                        step: "any", value: p.max_price || "" }))),
      field("Product IDs", ids)),
    h("button", { type: "submit" }, "Show the slate"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `#/ads${query(formParams(form))}`;
  });
  const slate = h("section", { "aria-labelledby": "slate-title" });
  main.replaceChildren(h("h2", {}, "Ads"), form, slate);
  if (!p.slots) return;
  const campaign = { slots: Number(p.slots) };
  if (kind === "products") {
    campaign.product_ids = (p.ids || "").split(/[\s,]+/).filter(Boolean);
  } else {
    if (p.category) campaign.category = p.category;
    if (p.max_price) campaign.max_price = Number(p.max_price);
  }
  results(slate, () => post(`/users/${encodeURIComponent(p.user)}/ads`, campaign), (r) =>
    h("div", {}, h("h2", { id: "slate-title" }, `Slate for ${r.user_id}`),
      h("p", { class: "muted" }, r.personalised ? "Ranked for this shopper's history."
                                                : "No history: the campaign's most popular."),
      r.items.length ? h("ol", { class: "grid slate results" }, r.items.map((item, i) =>
        h("li", {}, h("span", { class: "slot" }, `Slot ${i + 1}`), card(item))))
        : h("p", { class: "muted empty" }, "No product of this campaign can be shown.")));
}

// -- Overview -----------------------------------------------------------------------------
function markdown(text, plotUrl) {
  // Enough Markdown for `semrec evaluate --report`: headings, lists, tables, code, images.
  const inline = (line) => line.split(/(`[^`]*`)/).map((part) =>
    part.startsWith("`") && part.endsWith("`") && part.length > 1 ? h("code", {}, part.slice(1, -1)) : part);
  const out = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (/^#{1,6} /.test(line)) {
      const level = Math.min(line.indexOf(" ") + 2, 6);
      out.push(h(`h${level}`, {}, inline(line.replace(/^#+ /, ""))));
    } else if (line.startsWith("|")) {
      const rows = [];
      while (i < lines.length && lines[i].startsWith("|")) rows.push(lines[i++]);
      i--;
      const cells = (row) => row.replace(/^\||\|$/g, "").split("|").map((c) => c.trim());
      const body = rows.filter((r) => !/^\|[-:| ]+\|$/.test(r));
      out.push(h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, cells(body[0]).map((c) => h("th", { scope: "col" }, inline(c))))),
        h("tbody", {}, body.slice(1).map((r) => h("tr", {}, cells(r).map((c) => h("td", {}, inline(c)))))))));
    } else if (line.startsWith("- ")) {
      const items = [];
      while (i < lines.length && lines[i].startsWith("- ")) items.push(lines[i++].slice(2));
      i--;
      out.push(h("ul", {}, items.map((item) => h("li", {}, inline(item)))));
    } else if (/^!\[.*\]\(.*\)$/.test(line)) {
      if (plotUrl) {
        const img = h("img", { class: "plot", alt: line.slice(2, line.indexOf("]")) || "plot" });
        loadImage(img, plotUrl);
        out.push(img);
      }
    } else if (line.trim()) {
      out.push(h("p", {}, inline(line)));
    }
  }
  return out;
}

export function overview(main) {
  const stats = h("section", { "aria-labelledby": "ov-title" }, h("p", { class: "muted" }, "Loading…"));
  const report = h("section", { "aria-labelledby": "report-title", class: "report" },
                   h("h2", { id: "report-title" }, "Latest evaluation"), h("p", { class: "muted" }, "Loading…"));
  main.replaceChildren(stats, report);
  results(stats, () => get("/info"), (info) => {
    const tile = (label, value) => h("div", { class: "tile" }, h("span", { class: "value" }, value),
                                      h("span", { class: "label" }, label));
    const model = info.model;
    return h("div", {}, h("h2", { id: "ov-title" }, "Overview"),
      h("div", { class: "tiles" }, tile("products", info.products), tile("users", info.users),
        tile("events", info.events), tile("model versions", info.model_versions.length)),
      h("dl", { class: "fields" },
        h("dt", {}, "Served version"), h("dd", {}, info.served_version || "none yet"),
        model ? [h("dt", {}, "Model"), h("dd", {}, `${model.kind}, dimension ${model.dim}`),
                 h("dt", {}, "Encoders"),
                 h("dd", {}, Object.entries(model.encoders).map(([k, v]) => `${k}: ${v}`).join(", "))] : null,
        h("dt", {}, "Store"), h("dd", {}, info.store),
        info.home ? [h("dt", {}, "Data directory"), h("dd", {}, info.home)] : null));
  });
  get("/report").then((r) => {
    if (!r.available) {
      report.replaceChildren(report.firstChild, h("p", { class: "muted" }, r.how));
      return;
    }
    report.replaceChildren(report.firstChild,
      h("p", { class: "muted" }, `Written ${new Date(r.modified * 1000).toLocaleString()}.`),
      ...markdown(r.markdown.replace(/^# .*\n/, ""), r.plot_url));
  }).catch((error) => report.replaceChildren(report.firstChild,
    h("p", { class: "error" }, `Could not load the report: ${error.message}`)));
}
