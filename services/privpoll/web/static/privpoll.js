// privpoll's pages work without this file; it only adds: copy buttons, choice rows without
// a round trip, privacy presets, the live privacy / accuracy preview, local times and a live
// turnout count.
"use strict";

(function () {
  document.documentElement.classList.add("js");

  const Z95 = 1.959963984540054;

  // Mirrors privpoll.results.expected_margin: the 95% half-width for a choice that gets an
  // even share of the votes, with the expected number of fake ballots.
  function expectedMargin(voters, choices, fakeMean, p) {
    if (voters <= 0 || choices < 1) return 0;
    const m = choices, n = voters, w = 1 / m, c = n / m, fakes = n * fakeMean;
    const a = 1 - p + p / m, b = p / m;
    const variance =
      (fakes * w * (1 - w) + c * a * (1 - a) + (n - c) * b * (1 - b)) / ((1 - p) * (1 - p));
    return Z95 * Math.sqrt(variance);
  }

  const HEADERS = ["voter", "voters", "voter id", "voter_id", "voterid", "id", "email", "e-mail"];

  function countVoters(text) {
    let count = 0;
    let first = true;
    for (const line of text.split(/\r\n|\r|\n/)) {
      const cell = line.split(/[,;\t]/)[0].trim().replace(/^"|"$/g, "");
      if (!line.trim()) continue;
      if (first && HEADERS.includes(cell.toLowerCase())) { first = false; continue; }
      first = false;
      if (cell) count += 1;
    }
    return count;
  }

  function number(value) {
    const x = parseFloat(String(value).replace(",", "."));
    return Number.isFinite(x) ? x : null;
  }

  function flash(button, text) {
    const before = button.dataset.label || button.textContent;
    button.dataset.label = before;
    button.textContent = text;
    setTimeout(() => { button.textContent = before; }, 2000);
  }

  async function copy(target, button) {
    const text = "value" in target ? target.value : target.textContent;
    try {
      await navigator.clipboard.writeText(text);
    } catch (error) {
      target.select();
      document.execCommand("copy");
    }
    flash(button, "Copied");
  }

  function setUpCopyButtons() {
    for (const button of document.querySelectorAll("button[data-copy]")) {
      const target = document.getElementById(button.dataset.copy);
      if (!target) continue;
      button.hidden = false;
      button.addEventListener("click", () => copy(target, button));
    }
    for (const input of document.querySelectorAll("input.link-input")) {
      input.addEventListener("focus", () => input.select());
    }
  }

  function setUpLocalTimes() {
    for (const node of document.querySelectorAll("time[data-local]")) {
      const when = new Date(node.getAttribute("datetime"));
      if (!Number.isNaN(when.getTime())) {
        node.textContent = when.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
        node.title = node.getAttribute("datetime");
      }
    }
  }

  function setUpTurnout() {
    const section = document.getElementById("turnout");
    if (!section || !section.dataset.turnoutUrl) return;
    const voted = section.querySelector('[data-turnout="voted"]');
    const progress = section.querySelector('[data-turnout="progress"]');
    async function refresh() {
      try {
        const response = await fetch(section.dataset.turnoutUrl, { credentials: "same-origin" });
        if (!response.ok) return;
        const found = await response.json();
        voted.textContent = String(found.voted);
        progress.value = found.voted;
        progress.textContent = found.voted + " of " + found.eligible;
        if (found.phase === "Closed") return;
      } catch (error) {
        return;
      }
      setTimeout(refresh, 5000);
    }
    setTimeout(refresh, 5000);
  }

  function setUpPollForm() {
    const form = document.getElementById("new-poll");
    if (!form) return;
    const presets = JSON.parse(document.getElementById("presets").textContent);
    const rows = document.getElementById("choice-rows");
    const field = (name) => form.elements.namedItem(name);
    let uploaded = 0;

    // Times typed in the browser's zone; the server gets the offset with them.
    const offset = -new Date().getTimezoneOffset();
    field("utcOffset").value = String(offset);
    const sign = offset >= 0 ? "+" : "-";
    const hours = String(Math.floor(Math.abs(offset) / 60)).padStart(2, "0");
    const minutes = String(Math.abs(offset) % 60).padStart(2, "0");
    for (const node of form.querySelectorAll("[data-timezone]")) {
      node.textContent = "Times are in your time zone (UTC" + sign + hours + ":" + minutes + ").";
    }

    function renumber() {
      const all = rows.querySelectorAll(".choice-row");
      all.forEach((row, i) => {
        const input = row.querySelector("input");
        const label = row.querySelector("label");
        const button = row.querySelector("button");
        input.id = "choice-" + i;
        label.htmlFor = input.id;
        label.textContent = "Choice " + (i + 1);
        input.placeholder = "Choice " + (i + 1);
        button.setAttribute("aria-label", "Remove choice " + (i + 1));
        button.value = "remove-choice-" + i;
        button.disabled = all.length <= 2;
      });
      preview();
    }

    rows.addEventListener("click", (event) => {
      const button = event.target.closest("button.remove-choice");
      if (!button) return;
      event.preventDefault();
      const row = button.closest(".choice-row");
      const next = row.nextElementSibling || row.previousElementSibling;
      row.remove();
      renumber();
      if (next) next.querySelector("input").focus();
    });

    document.getElementById("add-choice").addEventListener("click", (event) => {
      event.preventDefault();
      const last = rows.querySelector(".choice-row:last-child");
      const row = last.cloneNode(true);
      row.querySelector("input").value = "";
      rows.appendChild(row);
      renumber();
      row.querySelector("input").focus();
    });

    function showDistributionFields() {
      const chosen = field("distribution").value;
      for (const node of form.querySelectorAll("[data-for]")) {
        node.hidden = !node.dataset.for.split(" ").includes(chosen);
      }
    }

    function applyPreset(key) {
      const preset = presets[key];
      if (!preset) return;
      field("distribution").value = preset.distribution;
      field("fake").value = preset.fake;
      field("fakeMin").value = preset.fakeMin;
      field("fakeMax").value = preset.fakeMax;
      field("randomized").checked = preset.randomized;
      field("epsilon").value = preset.epsilon;
      showDistributionFields();
      preview();
    }

    for (const radio of form.querySelectorAll('input[name="privacy"]')) {
      radio.addEventListener("change", () => applyPreset(radio.value));
    }
    for (const input of form.querySelectorAll("[data-advanced]")) {
      const custom = () => {
        form.querySelector('input[name="privacy"][value="custom"]').checked = true;
        showDistributionFields();
        preview();
      };
      input.addEventListener("input", custom);
      input.addEventListener("change", custom);
    }

    field("votersFile").addEventListener("change", () => {
      const file = field("votersFile").files[0];
      uploaded = 0;
      if (!file) { preview(); return; }
      const reader = new FileReader();
      reader.onload = () => { uploaded = countVoters(String(reader.result)); preview(); };
      reader.readAsText(file);
    });

    function fakeMean() {
      const distribution = field("distribution").value;
      if (distribution === "uniform") {
        const low = number(field("fakeMin").value), high = number(field("fakeMax").value);
        return low === null || high === null ? null : (low + high) / 2;
      }
      return number(field("fake").value);
    }

    function preview() {
      const voters = countVoters(field("voters").value) + uploaded;
      const filled = [...rows.querySelectorAll("input")].filter((i) => i.value.trim()).length;
      const choices = Math.max(filled, 2);
      let p = 0;
      if (field("randomized").checked) {
        const eps = number(field("epsilon").value);
        p = eps !== null && eps > 0 && eps <= 20 ? choices / (Math.exp(eps) - 1 + choices) : null;
      }
      const mean = fakeMean();
      const out = (key) => form.querySelector('[data-preview="' + key + '"]');
      out("voters").textContent = String(voters);
      if (mean === null || p === null) {
        out("margin").textContent = "check the noise settings";
      } else if (!voters) {
        out("margin").textContent = "enter the voters to see it";
      } else {
        const margin = expectedMargin(voters, choices, mean, p);
        out("margin").textContent =
          "± " + margin.toFixed(1) + " votes (± " + Math.round((100 * margin) / voters) +
          "% of the voters)";
      }
      if (p) {
        const epsilon = Math.log(1 + (choices * (1 - p)) / p);
        out("epsilon").textContent =
          epsilon.toFixed(2) + ": each choice is replaced by a random one with probability " +
          Math.round(p * 100) + "%";
      } else {
        out("epsilon").textContent = "off";
      }
    }

    form.addEventListener("input", (event) => {
      if (event.target.name === "voters" || event.target.name === "choice") preview();
    });
    showDistributionFields();
    renumber();
    const summary = document.getElementById("error-summary");
    if (summary) summary.focus();
  }

  document.addEventListener("DOMContentLoaded", () => {
    setUpCopyButtons();
    setUpLocalTimes();
    setUpTurnout();
    setUpPollForm();
  });
})();
