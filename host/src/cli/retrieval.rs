//! `--retrieval polling|fan-out` and its companions, shared by `host run`
//! and `host dev`: which record source the consumer reads through.

use crate::consumer::ConsumerConfig;
use crate::kinesis::fanout::FanOut;
use crate::kinesis::reader::Polling;
use crate::source::RecordSource;
use clap::{Args, ValueEnum};
use std::sync::Arc;

/// How records reach the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Retrieval {
    /// GetRecords per shard (shares each shard's 2 MB/s and 5 reads/s with
    /// every other poller).
    Polling,
    /// Enhanced fan-out: SubscribeToShard pushes records over a dedicated
    /// 2 MB/s per shard, with lower latency.
    FanOut,
}

/// The retrieval flags.
#[derive(Debug, Args)]
pub struct RetrievalArgs {
    /// `polling` (GetRecords) or `fan-out` (SubscribeToShard: pushed, a
    /// dedicated read throughput per consumer, lower latency).
    #[arg(long, value_enum, default_value_t = Retrieval::Polling, help_heading = "Retrieval")]
    pub retrieval: Retrieval,

    /// The stream consumer fan-out reads as; registered (and waited for
    /// until ACTIVE) when missing. Default: the --application name.
    #[arg(long, value_name = "NAME", help_heading = "Retrieval")]
    pub consumer_name: Option<String>,

    /// With fan-out: use an existing stream consumer, never register one.
    #[arg(long, help_heading = "Retrieval")]
    pub no_register: bool,
}

impl RetrievalArgs {
    /// The record source for `config`'s stream.
    pub async fn source(
        &self,
        client: &aws_sdk_kinesis::Client,
        config: &ConsumerConfig,
    ) -> anyhow::Result<Arc<dyn RecordSource>> {
        if self.retrieval == Retrieval::Polling {
            if self.consumer_name.is_some() || self.no_register {
                anyhow::bail!("--consumer-name and --no-register are for --retrieval fan-out");
            }
            return Ok(Arc::new(Polling {
                client: client.clone(),
                stream: config.stream.clone(),
                batch_size: config.batch_size,
                idle_time: config.idle_time,
            }));
        }
        let name = self.consumer_name.as_deref().unwrap_or(&config.application);
        let fan_out =
            FanOut::connect(client.clone(), &config.stream, name, !self.no_register, config.idle_time).await?;
        Ok(Arc::new(fan_out))
    }
}
