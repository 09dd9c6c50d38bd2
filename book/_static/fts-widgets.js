/* Set-up for the ipywidgets embedder (@jupyter-widgets/html-manager, embed-amd.js), loaded by
 * _config.yml (nb_ipywidgets_js) after require.js and before embed-amd.js, on widget pages only.
 *
 * 1. The embedder's webpack chunks locate their assets (Font Awesome fonts) from their AMD module
 *    URL. Two modules of the bundle each inject the Font Awesome @font-face rules:
 *    "@jupyter-widgets/html-manager/dist/libembed-amd" and "@jupyter-widgets/html-manager".
 *    Without a path mapping, RequireJS resolves them against the page's folder (e.g.
 *    notebooks/@jupyter-widgets/...), which does not exist, and the icons 404 whenever the
 *    browser picks that rule; map both to the copy served from _static/offline/html-manager/.
 * 2. @jupyter-widgets/base typesets widget labels with the MathJax 2 API
 *    (MathJax.Hub.Queue(["Typeset", MathJax.Hub, element])), but the book loads MathJax 3,
 *    which has no Hub: the call throws. Provide that one call on top of MathJax 3.
 */
(function () {
  "use strict";
  var staticBase = new URL(".", document.currentScript.src).href;  // .../_static/
  if (typeof window.require === "function" && typeof window.require.config === "function") {
    window.require.config({
      paths: {
        "@jupyter-widgets/html-manager/dist": staticBase + "offline/html-manager",
        "@jupyter-widgets/html-manager": staticBase + "offline/html-manager/embed-amd"
      }
    });
  }

  function typeset(element) {
    var mj = window.MathJax;
    if (!element || !mj || typeof mj.typesetPromise !== "function") { return; }
    var ready = (mj.startup && mj.startup.promise) || Promise.resolve();
    ready.then(function () { return mj.typesetPromise([element]); }).catch(function (err) {
      console.warn("MathJax could not typeset a widget label:", err);
    });
  }
  var hub = {
    Queue: function () {
      for (var i = 0; i < arguments.length; i++) {
        var job = arguments[i];
        if (Array.isArray(job) && job[0] === "Typeset") { typeset(job[2]); }
      }
    }
  };
  function install() {
    if (window.MathJax && !window.MathJax.Hub) { window.MathJax.Hub = hub; }
  }
  install();                                           // the configuration object Sphinx set
  document.addEventListener("DOMContentLoaded", install); // MathJax 3 itself (loaded deferred)
  window.addEventListener("load", install);
})();
