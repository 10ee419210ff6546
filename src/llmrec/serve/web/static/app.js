// The llmrec page: sign in with a key, choose a user, see and steer their recommendations, chat.
// Every request goes to this server's /v1 API with the key; text from the server is set with textContent only.

const API = document.body.dataset.api;
const KEY_STORE = "llmrec.key";
const $ = (id) => document.getElementById(id);

const state = {
  key: sessionStorage.getItem(KEY_STORE) || "",
  me: null, // GET /me: role, user_id, retrievers, ...
  user: null, // the user whose page this is
  session: null, // the chat session id
  shown: [], // item ids of the list on screen, in order
  titles: new Map(), // item id -> title, for the chat state
};

class ApiError extends Error {}

async function api(path, { method = "GET", body, query } = {}) {
  const url = new URL(API + path, window.location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const headers = { Authorization: `Bearer ${state.key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.ok) return response.json();
  throw await errorOf(response);
}

async function errorOf(response) {
  try {
    const { error } = await response.json();
    const fields = (error.fields || []).map((f) => `${f.loc.join(".")}: ${f.msg}`).join("; ");
    return new ApiError(fields ? `${error.message} (${fields})` : error.message);
  } catch {
    return new ApiError(`${response.status} ${response.statusText}`);
  }
}

function notice(text) {
  $("notice").textContent = text;
}

function fail(error) {
  const box = $("error");
  box.textContent = error instanceof ApiError ? error.message : `Something went wrong: ${error.message || error}`;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// Run an event handler, showing its error instead of losing it.
const guarded = (handler) => async (event) => {
  event.preventDefault();
  clearError();
  try {
    await handler(event);
  } catch (error) {
    fail(error);
  }
};

// -- signing in ------------------------------------------------------------------------------------------------
async function connect() {
  state.me = await api("/me");
  sessionStorage.setItem(KEY_STORE, state.key);
  const me = state.me;
  $("whoami").textContent = me.role === "admin" ? "signed in as admin" : `signed in as user ${me.user_id}`;
  for (const el of document.querySelectorAll("[data-admin-only]")) el.hidden = me.role !== "admin";
  const select = $("retriever");
  select.replaceChildren(...me.retrievers.map((name) => new Option(name, name, false, name === me.default_retriever)));
  $("app").hidden = false;
  if (me.role === "admin") {
    const page = await api("/users", { query: { limit: 1000 } });
    $("user-ids").replaceChildren(...page.users.map((u) => new Option(u.user_id)));
    notice(`${page.total} users. Choose one, or create a user.`);
  } else {
    await openUser(me.user_id);
  }
}

// -- the user --------------------------------------------------------------------------------------------------
async function openUser(userId) {
  const user = await api(`/users/${encodeURIComponent(userId)}`);
  state.user = user.user_id;
  state.shown = [];
  $("user-name").textContent = `User ${user.user_id}`;
  $("user-profile").textContent = user.profile || "";
  $("user-card").hidden = false;
  $("recs-heading").textContent = `Recommendations for ${user.user_id}`;
  await Promise.all([loadRecommendations(), newConversation()]);
}

async function createUser() {
  const userId = $("new-user-id").value.trim();
  const profile = $("new-user-profile").value.trim();
  await api("/users", { method: "POST", body: { user_id: userId, profile } });
  $("user-ids").append(new Option(userId));
  $("new-user").open = false;
  $("new-user-form").reset();
  $("user-id").value = userId;
  await openUser(userId);
  notice(`Created user ${userId}: they get the most popular items until their first feedback.`);
}

// -- recommendations -------------------------------------------------------------------------------------------
async function loadRecommendations() {
  const list = $("recs");
  list.setAttribute("aria-busy", "true");
  try {
    const result = await api(`/users/${encodeURIComponent(state.user)}/recommendations`, {
      query: { k: 10, explain: true, retriever: $("retriever").value, rerank: $("rerank").checked },
    });
    const before = state.shown;
    const ids = result.items.map((item) => item.item_id);
    list.replaceChildren(
      ...result.items.map((item) =>
        itemCard(item.item_id, item.title, item.attributes.year, item.attributes.genres, item.explanation?.text, {
          fresh: before.length > 0 && !before.includes(item.item_id),
          onFeedback: (kind, value) => giveFeedback(item, kind, value),
        }),
      ),
    );
    for (const item of result.items) state.titles.set(item.item_id, item.title);
    state.shown = ids;
    const how = `${result.retriever}${result.reranked ? " + language-model rerank" : ""}`;
    const cold = result.known_user ? "" : " · new user: from your profile and feedback (popular items without them) until the next refit";
    $("recs-meta").textContent = `${how}${cold}${changes(before, ids)}`;
  } finally {
    list.setAttribute("aria-busy", "false");
  }
}

function changes(before, after) {
  if (before.length === 0) return "";
  const gone = before.filter((id) => !after.includes(id));
  const added = after.filter((id) => !before.includes(id));
  if (gone.length === 0 && added.length === 0) return " · list unchanged";
  const names = gone.map((id) => state.titles.get(id) || id).join(", ");
  return ` · updated: ${gone.length} left (${names}), ${added.length} new`;
}

async function giveFeedback(item, kind, value) {
  const body = { user_id: state.user, item_id: item.item_id, kind };
  if (kind === "rating") body.value = value;
  await api("/feedback", { method: "POST", body });
  notice(`Noted: ${label(kind, value)} on ${item.title}.`);
  await loadRecommendations();
}

function label(kind, value) {
  return { thumbs_up: "a like", thumbs_down: "not for me", seen: "seen it", rating: `${value} stars` }[kind];
}

// One item as a card: title, year and genres, its reason, and feedback buttons.
function itemCard(itemId, title, year, genres, reason, { fresh = false, onFeedback }) {
  const card = $("item-template").content.firstElementChild.cloneNode(true);
  card.dataset.itemId = itemId;
  const dated = year && !title.endsWith(`(${year})`);
  card.querySelector(".title").textContent = dated ? `${title} (${year})` : title;
  card.querySelector(".meta").textContent = genreList(genres).join(" · ");
  card.querySelector(".why").textContent = reason || "";
  if (fresh) {
    card.classList.add("new");
    card.querySelector(".badge").hidden = false;
  }
  for (const button of card.querySelectorAll("button[data-kind]")) {
    button.addEventListener("click", guarded(() => onFeedback(button.dataset.kind)));
  }
  const rating = card.querySelector("select[data-kind=rating]");
  rating.addEventListener(
    "change",
    guarded(() => (rating.value ? onFeedback("rating", Number(rating.value)) : undefined)),
  );
  return card;
}

// Genres as a list, whether the catalogue stores a list or MovieLens's "Comedy|Drama".
function genreList(genres) {
  if (Array.isArray(genres)) return genres;
  return typeof genres === "string" && genres ? genres.split("|") : [];
}

// -- chat ------------------------------------------------------------------------------------------------------
async function newConversation() {
  const session = await api("/chat/sessions", { method: "POST", body: { user_id: state.user } });
  state.session = session.session_id;
  $("transcript").replaceChildren();
  showState(session.state);
}

function say(role, text) {
  const turn = document.createElement("li");
  turn.className = `turn ${role}`;
  const words = document.createElement("p");
  words.textContent = text;
  const items = document.createElement("ol");
  items.className = "chat-items";
  turn.append(words, items);
  $("transcript").append(turn);
  turn.scrollIntoView({ block: "end" });
  return turn;
}

async function sendMessage() {
  const input = $("chat-input");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  say("user", text);
  const answer = say("assistant", "…");
  answer.setAttribute("aria-busy", "true");
  const response = await fetch(`${API}/chat/sessions/${state.session}/messages`, {
    method: "POST",
    headers: { Authorization: `Bearer ${state.key}`, "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify({ text }),
  });
  if (!response.ok) {
    answer.remove();
    throw await errorOf(response);
  }
  try {
    for await (const { event, data } of serverSentEvents(response)) {
      if (event === "state") showState(data.state);
      else if (event === "item") answer.querySelector(".chat-items").append(chatItem(data));
      else if (event === "done") {
        answer.querySelector("p").textContent = data.text;
        showState(data.state);
      } else if (event === "error") throw new ApiError(data.error.message);
    }
  } finally {
    answer.setAttribute("aria-busy", "false");
  }
}

function chatItem(item) {
  state.titles.set(item.item_id, item.title);
  return itemCard(item.item_id, item.title, item.year, item.genres, item.reason, {
    onFeedback: async (kind, value) => {
      const body = { item_id: item.item_id, kind };
      if (kind === "rating") body.value = value;
      const session = await api(`/chat/sessions/${state.session}/feedback`, { method: "POST", body });
      showState(session.state);
      notice(`Noted: ${label(kind, value)} on ${item.title}; the next answer and the list reflect it.`);
      await loadRecommendations();
    },
  });
}

// Parse a text/event-stream body into {event, data} objects as they arrive.
async function* serverSentEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replaceAll("\r\n", "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}

// The conversation's state as chips: likes, dislikes, genre and year constraints, the description.
function showState(dialogue) {
  const chips = [];
  const chip = (kind, text) => {
    const li = document.createElement("li");
    li.className = `chip ${kind}`;
    li.dataset.kind = kind;
    li.textContent = text;
    chips.push(li);
  };
  const title = (id) => state.titles.get(id) || `item ${id}`;
  for (const id of dialogue.liked) chip("liked", `likes ${title(id)}`);
  for (const id of dialogue.disliked) chip("disliked", `not ${title(id)}`);
  for (const genre of dialogue.genres_include) chip("genre", genre);
  for (const genre of dialogue.genres_exclude) chip("no-genre", `no ${genre}`);
  if (dialogue.year_min !== null) chip("year", `from ${dialogue.year_min}`);
  if (dialogue.year_max !== null) chip("year", `up to ${dialogue.year_max}`);
  if (dialogue.query) chip("query", `“${dialogue.query}”`);
  $("chat-state").replaceChildren(...chips);
}

// -- wiring ----------------------------------------------------------------------------------------------------
$("key-form").addEventListener(
  "submit",
  guarded(async () => {
    state.key = $("api-key").value.trim();
    await connect();
  }),
);
$("user-form").addEventListener("submit", guarded(() => openUser($("user-id").value.trim())));
$("new-user-form").addEventListener("submit", guarded(createUser));
$("recs-form").addEventListener("submit", guarded(loadRecommendations));
$("chat-form").addEventListener("submit", guarded(sendMessage));
$("chat-new").addEventListener("click", guarded(newConversation));

if (state.key) {
  $("api-key").value = state.key;
  connect().catch((error) => {
    sessionStorage.removeItem(KEY_STORE);
    fail(error);
  });
}
