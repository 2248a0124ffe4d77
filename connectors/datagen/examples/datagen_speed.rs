//! How fast datagen generates: `cargo run --release -p plexus-connector-datagen --example datagen_speed [events]`.

use std::sync::Arc;
use std::time::Instant;

use plexus_connector::{CollectDeadLetters, Poll, Source, SourceContext, TaskMetrics};
use plexus_connector_datagen::{DatagenConfig, DatagenSource};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let events: u64 = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(5_000_000);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    runtime.block_on(async {
        let ctx = SourceContext::new(
            "bench",
            0,
            Arc::new(TaskMetrics::default()),
            Arc::new(CollectDeadLetters::default()),
        );
        let mut source = DatagenSource::new(DatagenConfig {
            count: Some(events),
            ..DatagenConfig::default()
        });
        source.start(&ctx, None).await?;
        let started = Instant::now();
        let (mut records, mut bytes) = (0u64, 0u64);
        while let Poll::Batch(batch) = source.poll(&ctx).await? {
            records += batch.records.len() as u64;
            bytes += batch
                .records
                .iter()
                .map(|r| r.value.as_ref().map_or(0, |v| v.len()) as u64)
                .sum::<u64>();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{events} events ({records} records, {:.0} MB of values) in {secs:.2} s: {:.2} M events/s, {:.0} MB/s",
            bytes as f64 / 1e6,
            events as f64 / secs / 1e6,
            bytes as f64 / secs / 1e6
        );
        Ok(())
    })
}
