// The storefront's router: the URL hash names the view and its parameters, so every view
// is a link (back/forward, bookmarks) and nothing needs a server-side route.
//   #/?q=...&category=...      Search (popular products without a query)
//   #/product/ID?diversity=0.3&by=image Product page with similar items (by look, text, both)
//   #/shopper/USER             Shopper view: feed with "because", recent history
//   #/ads?user=...&slots=...   Ad slate for a campaign
//   #/overview                 Counts, model, store, the latest evaluation report

import { readsNeedKey, apiKey, askKey } from "./api.js";
import { showError } from "./ui.js";
import { ads, overview, product, search, shopper } from "./views.js";

function parse() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, queryString = ""] = hash.split("?");
  const params = Object.fromEntries(new URLSearchParams(queryString));
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { name: parts[0] || "search", arg: parts[1], params };
}

let first = true;

function route() {
  const { name, arg, params } = parse();
  const main = document.getElementById("view");
  showError(null);
  for (const link of document.querySelectorAll("[data-nav]")) {
    const current = link.dataset.nav === (name === "product" ? "search" : name);
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = "semrec storefront";
  if (name === "product" && arg) product(main, { ...params, id: arg });
  else if (name === "shopper") shopper(main, { ...params, user: arg });
  else if (name === "ads") ads(main, params);
  else if (name === "overview") overview(main);
  else search(main, params);
  if (!first) main.focus({ preventScroll: false });
  first = false;
}

window.addEventListener("hashchange", route);
window.addEventListener("unhandledrejection", (event) => {
  showError(event.reason);
  event.preventDefault();
});
if (readsNeedKey() && !apiKey()) askKey().then(route);
else route();
