// llava-bot playground: pick an image, ask, watch the answer arrive (POST /api/ask, server-sent events).
"use strict";

(() => {
  const TOKEN_KEY = "llava-bot-playground-token";
  const LOST = "⚠️ The connection to the playground was lost; please ask again.";
  const $ = (id) => document.getElementById(id);

  const state = {
    file: null,          // the chosen image (a File)
    previewUrl: null,    // its blob: URL
    conversation: null,  // id from the last "done": follow-ups are about the same image
    controller: null,    // the request in flight (aborted by "New image")
    token: sessionStorage.getItem(TOKEN_KEY),
    defaultQuestion: "Describe this image.", // until /api/info says
  };

  // -- small helpers ----------------------------------------------------------

  function authHeaders() {
    return state.token ? { Authorization: `Bearer ${state.token}` } : {};
  }

  function setStatus(text, isError = false) {
    const status = $("status");
    status.textContent = text;
    status.classList.toggle("error", isError);
  }

  function setBusy(busy) {
    const button = $("ask");
    button.setAttribute("aria-disabled", busy ? "true" : "false");
    button.textContent = busy ? "Answering…" : "Ask";
  }

  function formatBytes(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
    return `${(n / 1024 / 1024).toFixed(1)} MB`;
  }

  // -- server-sent events over fetch (EventSource cannot POST) ----------------

  async function* readEvents(response) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message";
        let data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trimStart();
        }
        if (data) yield { name, data: JSON.parse(data) };
      }
    }
  }

  // -- the image ------------------------------------------------------------

  function clearPreview() {
    if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
    state.previewUrl = null;
    const preview = $("preview");
    preview.hidden = true;
    preview.removeAttribute("src");
    $("drop-hint").hidden = false;
    $("drop").classList.remove("has-image");
    $("file-name").textContent = "";
  }

  function setFile(file) {
    if (!file) return;
    abortRequest();
    clearThread();
    clearPreview();
    state.file = file;
    state.conversation = null;
    $("file-name").textContent = `${file.name || "pasted image"} · ${formatBytes(file.size)}`;
    if (file.type.startsWith("image/")) {
      state.previewUrl = URL.createObjectURL(file);
      const preview = $("preview");
      preview.alt = `Preview of ${file.name || "the pasted image"}`;
      preview.src = state.previewUrl;
      preview.hidden = false;
      $("drop-hint").hidden = true;
      $("drop").classList.add("has-image");
    }
    setStatus("Image ready. Ask a question about it.");
  }

  function newImage() {
    abortRequest();
    clearThread();
    clearPreview();
    state.file = null;
    state.conversation = null;
    $("image").value = "";
    setStatus("");
    $("image").focus();
  }

  // -- the conversation -------------------------------------------------------

  function clearThread() {
    $("thread").replaceChildren();
    $("empty").hidden = false;
  }

  function addTurn(question) {
    const item = document.createElement("li");
    item.className = "turn";
    item.innerHTML =
      '<div class="bubble question"><span class="who">You</span><p class="question-text"></p></div>' +
      '<div class="bubble answer" aria-busy="true"><span class="who">llava-bot</span>' +
      '<p class="answer-place"></p><p class="answer-text"></p><p class="answer-footer"></p></div>';
    item.querySelector(".question-text").textContent = question || state.defaultQuestion;
    $("thread").append(item);
    $("empty").hidden = true;
    scrollThread();
    return {
      answer: item.querySelector(".answer"),
      place: item.querySelector(".answer-place"),
      text: item.querySelector(".answer-text"),
      footer: item.querySelector(".answer-footer"),
    };
  }

  function scrollThread() {
    const thread = $("thread");
    thread.scrollTop = thread.scrollHeight;
  }

  function finishTurn(turn) {
    turn.answer.setAttribute("aria-busy", "false");
    turn.text.classList.remove("streaming");
    turn.place.hidden = true;
  }

  function failTurn(turn, message) {
    finishTurn(turn);
    turn.answer.classList.add("failed");
    const line = document.createElement("p");
    line.className = "answer-error";
    line.textContent = message;
    turn.answer.append(line);
    scrollThread();
    setStatus(message, true);
  }

  // -- asking ---------------------------------------------------------------

  function buildForm(question) {
    const form = new FormData();
    if (state.conversation) form.append("conversation", state.conversation);
    else if (state.file) form.append("image", state.file, state.file.name || "pasted-image");
    form.append("question", question);
    const maxTokens = $("max-tokens").value.trim();
    if (maxTokens) form.append("max_tokens", maxTokens);
    return form;
  }

  function abortRequest() {
    if (state.controller) state.controller.abort();
    state.controller = null;
    setBusy(false);
  }

  async function ask() {
    if (state.controller) return; // one question at a time
    const question = $("question").value.trim();
    const turn = addTurn(question);
    const controller = new AbortController();
    state.controller = controller;
    setBusy(true);
    setStatus("Sending…");
    try {
      const response = await fetch("/api/ask", {
        method: "POST", body: buildForm(question), headers: authHeaders(), signal: controller.signal,
      });
      if (response.status === 401) {
        failTurn(turn, "⚠️ This playground needs its access token.");
        showAuth(state.token ? "That token was not accepted." : "");
        return;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      $("question").value = "";
      const ended = await follow(response, turn);
      if (!ended) failTurn(turn, LOST);
    } catch (err) {
      if (controller.signal.aborted) return;
      failTurn(turn, LOST);
    } finally {
      if (state.controller === controller) {
        state.controller = null;
        setBusy(false);
      }
    }
  }

  // Show the events of one answer; true once "done" or "error" came.
  async function follow(response, turn) {
    let text = "";
    for await (const { name, data } of readEvents(response)) {
      if (name === "queued") {
        turn.place.textContent = `⏳ #${data.position} in line`;
        setStatus(`⏳ #${data.position} in line`);
      } else if (name === "delta" || name === "reset") {
        text = name === "delta" ? text + data.text : "";
        turn.place.hidden = true;
        turn.text.textContent = text;
        turn.text.classList.add("streaming");
        scrollThread();
        setStatus("Answering…");
      } else if (name === "done") {
        finishTurn(turn);
        turn.text.textContent = data.text;
        turn.footer.textContent = data.footer;
        scrollThread();
        state.conversation = data.conversation;
        const t = data.timings;
        setStatus(`Answered in ${(t.queue_wait_s + t.total_s).toFixed(2)} s. Ask a follow-up about the same image.`);
        return true;
      } else if (name === "error") {
        if (data.code === "conversation_expired") state.conversation = null; // the next ask sends the image again
        failTurn(turn, data.message);
        return true;
      }
    }
    return false;
  }

  // -- the access token --------------------------------------------------------

  function showAuth(message) {
    $("auth").hidden = false;
    $("auth-error").textContent = message;
    $("token").focus();
  }

  async function loadInfo() {
    let response;
    try {
      response = await fetch("/api/info", { headers: authHeaders() });
    } catch (err) {
      $("model").textContent = "Not connected";
      return;
    }
    if (response.status === 401) {
      $("model").textContent = "Locked";
      showAuth(state.token ? "That token was not accepted." : "");
      return;
    }
    const info = await response.json();
    $("auth").hidden = true;
    $("model").textContent = `${info.model} · ${info.chat_format}`;
    const maxTokens = $("max-tokens");
    maxTokens.placeholder = String(info.max_tokens);
    maxTokens.max = String(info.max_tokens_limit);
    maxTokens.title = `Default ${info.max_tokens}, at most ${info.max_tokens_limit}`;
    $("question").placeholder = info.default_question;
    state.defaultQuestion = info.default_question;
  }

  // -- wiring ---------------------------------------------------------------

  function firstImage(list) {
    const files = Array.from(list || []);
    return files.find((f) => f.type.startsWith("image/") || f.type.startsWith("video/")) || files[0] || null;
  }

  function wire() {
    $("ask-form").addEventListener("submit", (event) => { event.preventDefault(); ask(); });
    $("question").addEventListener("keydown", (event) => {
      if (event.key !== "Enter" || event.isComposing) return;
      if (event.shiftKey && !(event.ctrlKey || event.metaKey)) return; // Shift+Enter: a new line
      event.preventDefault();
      ask();
    });
    $("image").addEventListener("change", (event) => setFile(event.target.files[0]));
    $("new-image").addEventListener("click", newImage);
    const drop = $("drop");
    document.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("dragging"); });
    document.addEventListener("dragleave", (event) => {
      if (event.relatedTarget === null) drop.classList.remove("dragging");
    });
    document.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("dragging");
      setFile(firstImage(event.dataTransfer && event.dataTransfer.files));
    });
    document.addEventListener("paste", (event) => {
      const file = firstImage(event.clipboardData && event.clipboardData.files);
      if (file) { event.preventDefault(); setFile(file); }
    });
    $("preview").addEventListener("error", () => { $("preview").hidden = true; $("drop-hint").hidden = false; });
    $("auth-form").addEventListener("submit", (event) => {
      event.preventDefault();
      state.token = $("token").value.trim();
      sessionStorage.setItem(TOKEN_KEY, state.token);
      loadInfo();
    });
  }

  wire();
  loadInfo();
})();
