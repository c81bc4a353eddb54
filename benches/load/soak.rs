//! The soak (`cargo bench --bench load -- soak --minutes 30 --rate 200`):
//! a paced load for many minutes to a Discord-like sink that fails, rate
//! limits and answers shared 429s, sampled every `--report-every` seconds.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::drive::{Bodies, Load, Pace, drive, wait_delivered};
use crate::relay::{DISCORD_TEMPLATE, RelaySetup, dead_letters, queue_depth, start_relay};
use crate::report::{round2, rss_mib};
use crate::sink::{Sink, SinkBehaviour};
use crate::{KEY, Res};

pub async fn soak(args: &[String]) -> Res<()> {
    let flag = |name: &str, default: u64| -> Res<u64> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(args
                .get(i + 1)
                .ok_or(format!("{name} needs a value"))?
                .parse()
                .map_err(|e| format!("{name}: {e}"))?),
            None => Ok(default),
        }
    };
    let minutes = flag("--minutes", 30)?;
    let rate = flag("--rate", 200)?;
    let every = Duration::from_secs(flag("--report-every", 60)?);
    let epoch = Instant::now();
    let bodies = Arc::new(Bodies::load()?);
    let sink = Sink::start(epoch).await?;
    // Discord-like: 10% 503, a bucket of 250 per second announced in
    // Discord's headers (429 with Discord's body once spent; the relay's own
    // quota is set above it, so only the headers keep it within), and 1%
    // 429 from a shared limit that no header announces.
    sink.reset(
        "soak",
        SinkBehaviour {
            fail_percent: 10,
            bucket: Some((250, Duration::from_secs(1))),
            shared_429_percent: 1,
        },
    );
    let target = format!(
        "{{kind: discord, url: \"http://{}/api/webhooks/1/soak-token\", timeout: 5s, \
          rate_limit: {{requests: 300, per: 1s, burst: 50}}, \
          retry: {{max_attempts: 12, initial_backoff: 20ms, max_backoff: 2s}}}}",
        sink.addr
    );
    let (relay, _) = start_relay(&RelaySetup {
        filler_routes: 9,
        target,
        template: Some(DISCORD_TEMPLATE),
    })
    .await?;
    eprintln!(
        "soak: {minutes} min at {rate} ev/s; sink fails 10% with 503, limits to 250/s like Discord, 1% shared 429"
    );
    let duration = Duration::from_secs(minutes * 60);
    let load = tokio::spawn(drive(
        Load {
            addr: relay.ingest,
            uri: format!("/crisp/hooks?key={KEY}"),
            connections: 16,
            run: "soak".into(),
            pace: Pace::Open { rate, duration },
        },
        bodies,
        epoch,
    ));
    let started = Instant::now();
    let mut samples = Vec::new();
    println!("| minute | RSS MiB | delivered | pending | 503 sent | 429 sent | dead letters |");
    println!("|---|---|---|---|---|---|---|");
    while !load.is_finished() {
        tokio::time::sleep(
            every.min(duration.saturating_sub(started.elapsed()) + Duration::from_millis(100)),
        )
        .await;
        let (rss, _) = rss_mib(relay.pid());
        let pending = queue_depth(relay.admin).await.unwrap_or(0);
        let dead = dead_letters(relay.admin).await.unwrap_or(0);
        let row = (
            started.elapsed().as_secs_f64() / 60.0,
            rss,
            sink.unique(),
            pending,
            sink.failed_503.load(Ordering::Relaxed),
            sink.limited_429.load(Ordering::Relaxed),
            dead,
        );
        println!(
            "| {:.1} | {:.1} | {} | {} | {} | {} | {} |",
            row.0, row.1, row.2, row.3, row.4, row.5, row.6
        );
        samples.push(row);
    }
    let result = load.await??;
    let missing_before_drain =
        result.acked.len() as u64 - sink.unique().min(result.acked.len() as u64);
    let missing = wait_delivered(&sink, &result.acked, Duration::from_secs(120)).await;
    let dead = dead_letters(relay.admin).await.unwrap_or(0);
    let (rss_end, peak) = rss_mib(relay.pid());
    let (out_of_order, duplicates) = {
        let b = sink.book.lock().unwrap_or_else(|p| p.into_inner());
        (b.out_of_order, b.duplicates)
    };
    relay.stop();
    // Flat: the last quarter's RSS against the first quarter's (after warm-up).
    let q = (samples.len() / 4).max(1);
    let first = samples.iter().take(q).map(|s| s.1).fold(0.0, f64::max);
    let last = samples
        .iter()
        .rev()
        .take(q)
        .map(|s| s.1)
        .fold(0.0, f64::max);
    let lost = missing.saturating_sub(dead);
    let report = json!({
        "minutes": minutes, "rate": rate,
        "acknowledged": result.ok, "rejected": result.rejected, "errors": result.errors,
        "delivered": sink.unique(), "pending_when_load_stopped": missing_before_drain,
        "dead_letters": dead, "lost": lost, "out_of_order": out_of_order, "duplicates": duplicates,
        "sink_503": sink.failed_503.load(Ordering::Relaxed), "sink_429": sink.limited_429.load(Ordering::Relaxed),
        "rss_mib": {"first_quarter_max": round2(first), "last_quarter_max": round2(last), "end": round2(rss_end), "peak": round2(peak)},
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if lost > 0 || out_of_order > 0 {
        return Err(format!("{lost} lost, {out_of_order} out of order").into());
    }
    Ok(())
}
