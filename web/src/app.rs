//! The application shell: header, the one page, footer.

use leptos::prelude::*;

use crate::pages::home::HomePage;

/// The root component.
#[component]
#[allow(
    unreachable_pub,
    reason = "#[component] expands to `pub` items of its own"
)]
pub(crate) fn App() -> impl IntoView {
    view! {
        <header class="site-header">
            <h1>"Notes & greetings"</h1>
            <p class="tagline">"Store a note with a greeting, then look back at the newest entries."</p>
        </header>
        <main id="main">
            <HomePage/>
        </main>
        <footer class="site-footer">
            <a href="/docs/">"API documentation"</a>
        </footer>
    }
}
