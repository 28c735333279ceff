//! Small async helpers shared by the node's tasks.

use std::future::Future;
use std::time::Duration;

use futures_lite::future;

/// Runs `fut` for at most `limit`; None when the time ran out first.
pub async fn with_timeout<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}
