-- The console's one page: app.js draws everything in <main>. No inline script or style
-- (the Content-Security-Policy allows neither).
return [==[
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Foundry console</title>
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/assets/app.css">
<link rel="stylesheet" href="/assets/xterm.css">
<script defer src="/assets/app.js"></script>
</head>
<body>
<header class="topbar">
  <a class="brand" href="/" data-nav="/"><span class="logo">&#x2B22;</span> Foundry</a>
  <nav class="topnav">
    <a href="/" data-nav="/" id="nav-fleet">Sandboxes</a>
    <a href="/settings" data-nav="/settings" id="nav-settings">Settings</a>
  </nav>
  <span class="spacer"></span>
  <span id="engine" class="badge mode" title="Where sandboxes run">local</span>
  <span id="live" class="live" title="Live updates">&#x25CF; live</span>
</header>
<main id="main"><p class="muted pad">Loading&#x2026;</p></main>
<div id="toasts" aria-live="polite"></div>
<noscript><p class="pad">The console needs JavaScript.</p></noscript>
</body>
</html>
]==]
