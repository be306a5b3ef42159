//! The lease table in DynamoDB: one item per shard with KCL 2.x's attribute
//! names where they mean the same thing, every write a conditional
//! UpdateItem; big plugin states as immutable chunks in a second table
//! (`<name>-state`), pointed to from the lease.

use super::{Commit, Conflict, Deployment, Lease, LeaseError, LeaseTable, PreSwapWrite, StateRef, StateWrite};
use anyhow::Context;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, KeyType};
use aws_sdk_dynamodb::Client;
use std::collections::HashMap;
use std::time::Duration;

/// Bytes per state chunk: under the 400 KB item limit with room for keys.
const CHUNK: usize = 350 * 1024;
/// The attributes that hold a lease's state or its pointer.
const STATE_ATTRIBUTES: [&str; 6] =
    ["stateLayout", "stateInline", "stateChunkTag", "stateChunks", "stateLength", "stateSha256"];
/// The state table's key of the group's settings (no shard id starts with `!`).
const SETTINGS: &str = "!settings";
/// Marks items this host wrote (a KCL table has none).
const FORMAT: &str = "hostLeaseFormat";

type Item = HashMap<String, AttributeValue>;

mod item;
mod logic;
mod setup;
mod state;

use item::{lease_of, n, s};

/// Whether a missing table may be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableSetup {
    /// Create the lease and state tables (on-demand billing) when missing.
    CreateIfMissing,
    /// Never create (locked-down accounts): a missing table is an error.
    MustExist,
    /// Only look (`host leases`): a missing table is an error.
    Inspect,
}

/// A lease table in DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoTable {
    client: Client,
    /// The lease table's name (`--lease-table`).
    table: String,
    /// Where big states go: `<table>-state`.
    state_table: String,
    /// The stream whose shards the leases are: one table per stream and
    /// application, since shard ids repeat across streams.
    stream: String,
}

impl DynamoTable {
    /// Connects with the usual AWS conventions (`options.endpoint_url` is
    /// the DynamoDB endpoint) and opens `table` (see [`DynamoTable::open`]).
    pub async fn connect(
        options: &crate::aws::AwsOptions,
        table: &str,
        stream: &str,
        setup: TableSetup,
    ) -> anyhow::Result<Self> {
        let client = Client::new(&crate::aws::sdk_config(options).await?);
        DynamoTable::open(client, table, stream, setup).await
    }

    /// Opens `table` for the leases of `stream`, creating it (and its state
    /// table) if allowed, and checks that it is a lease table of this
    /// host's layout for that stream.
    pub async fn open(client: Client, table: &str, stream: &str, setup: TableSetup) -> anyhow::Result<Self> {
        let this =
            DynamoTable { client, table: table.into(), state_table: format!("{table}-state"), stream: stream.into() };
        this.ensure(&this.table, &[("leaseKey", KeyType::Hash)], setup).await?;
        if setup != TableSetup::Inspect {
            this.ensure(&this.state_table, &[("leaseKey", KeyType::Hash), ("chunk", KeyType::Range)], setup).await?;
        }
        let sample =
            this.client.scan().table_name(&this.table).limit(20).send().await.map_err(|e| sdk(e, &this.table))?;
        if let Some(item) = sample.items().iter().find(|item| !item.contains_key(FORMAT)) {
            let key = item.get("leaseKey").and_then(|k| k.as_s().ok()).map_or("?", String::as_str);
            anyhow::bail!(
                "table `{table}` holds leases this host did not write (item `{key}`: a KCL application's?); \
                 give --lease-table a table of its own"
            );
        }
        let other = sample.items().iter().filter_map(|item| item.get("streamName")?.as_s().ok()).find(|s| *s != stream);
        if let Some(other) = other {
            anyhow::bail!(
                "table `{table}` holds the leases of stream `{other}`, not `{stream}`; \
                 give each stream (and application) a --lease-table of its own"
            );
        }
        Ok(this)
    }

    /// The lease table's name.
    pub fn name(&self) -> &str {
        &self.table
    }

    /// A conditional update of one lease; a failed condition is a [`Conflict`].
    /// One item of the lease table (a lease, or the group's logic), read consistently.
    async fn item(&self, key: &str) -> Result<Option<Item>, LeaseError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("leaseKey", s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify(e, &self.table))?;
        Ok(out.item().cloned())
    }

    async fn update(
        &self,
        key: &str,
        (counter, nonce): (u64, u64),
        condition: &str,
        update: &str,
        mut values: Vec<(&str, AttributeValue)>,
    ) -> Result<Lease, LeaseError> {
        values.push((":c", n(counter)));
        values.push((":next", n(counter + 1)));
        values.push((":now", n(now_millis())));
        values.push((":nonce", n(nonce)));
        let update =
            update.replace("leaseCounter = :next", "leaseCounter = :next, updatedAtMillis = :now, leaseNonce = :nonce");
        let mut call = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("leaseKey", s(key))
            .condition_expression(format!("leaseCounter = :c{condition}"))
            .update_expression(update)
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew);
        for (name, value) in values {
            call = call.expression_attribute_values(name, value);
        }
        match call.send().await {
            Ok(out) => lease_of(out.attributes().context("UpdateItem returned no item")?).map_err(Into::into),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Err(Conflict { key: key.into(), expected: counter }.into())
            }
            Err(e) => Err(classify(e, &self.table)),
        }
    }
}

#[async_trait::async_trait]
impl LeaseTable for DynamoTable {
    async fn create(&self, key: &str, parents: &[String]) -> Result<(), LeaseError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("leaseKey", s(key))
            .item("leaseCounter", n(0))
            .item("ownerSwitchesSinceCheckpoint", n(0))
            .item("stateVersion", n(0))
            .item(FORMAT, n(1))
            .item("updatedAtMillis", n(now_millis()))
            .item("streamName", s(&self.stream))
            .condition_expression("attribute_not_exists(leaseKey)");
        if !parents.is_empty() {
            put = put.item("parentShardId", AttributeValue::Ss(parents.to_vec()));
        }
        match put.send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(()),
            Err(e) => Err(sdk(e, &self.table).into()),
        }
    }

    async fn scan(&self) -> Result<Vec<Lease>, LeaseError> {
        let mut leases = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk(e, &self.table))?;
            for item in page.items().iter().filter(|item| !logic::is_deployment(item)) {
                leases.push(lease_of(item)?);
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => break,
            }
        }
        leases.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(leases)
    }

    async fn get(&self, key: &str) -> Result<Option<Lease>, LeaseError> {
        Ok(self.item(key).await?.as_ref().map(lease_of).transpose()?)
    }

    async fn take(&self, key: &str, counter: u64, me: &str, nonce: u64) -> Result<Lease, LeaseError> {
        // An owner switch is counted only when the owner changes.
        let switches = "ownerSwitchesSinceCheckpoint = if_not_exists(ownerSwitchesSinceCheckpoint, :zero) + :one";
        self.update(
            key,
            (counter, nonce),
            "",
            &format!("SET leaseOwner = :me, leaseCounter = :next, {switches} REMOVE handOffTo"),
            vec![(":me", s(me)), (":zero", n(0)), (":one", n(1))],
        )
        .await
    }

    async fn renew(&self, key: &str, counter: u64, me: &str, nonce: u64) -> Result<Lease, LeaseError> {
        self.update(key, (counter, nonce), " AND leaseOwner = :me", "SET leaseCounter = :next", vec![(":me", s(me))])
            .await
    }

    async fn checkpoint(
        &self,
        key: &str,
        counter: u64,
        me: &str,
        nonce: u64,
        commit: &Commit,
    ) -> Result<Lease, LeaseError> {
        let mut set: Vec<String> = ["leaseCounter = :next", "checkpointSubSequenceNumber = :sub", "stateVersion = :sv"]
            .map(String::from)
            .into();
        set.push("ownerSwitchesSinceCheckpoint = :zero".into());
        let mut values =
            vec![(":me", s(me)), (":sub", n(commit.sub_sequence)), (":sv", n(commit.state_version)), (":zero", n(0))];
        if let Some(checkpoint) = &commit.checkpoint {
            set.push("checkpoint = :cp".into());
            values.push((":cp", s(checkpoint)));
        }
        if let Some(logic) = &commit.logic {
            set.extend(["logicSha256 = :logic".into(), "logicCommits = :lc".into()]);
            values.extend([(":logic", s(logic)), (":lc", n(commit.logic_commits))]);
            if commit.logic_commits == 1 {
                set.push("logicSinceMillis = :now".into());
            }
        }
        let mut remove = Vec::new();
        match &commit.state {
            StateWrite::Keep => {}
            StateWrite::Clear => remove.extend(STATE_ATTRIBUTES),
            StateWrite::Set(state) => {
                let attributes = item::state_attributes(state);
                let written: Vec<&str> = attributes.iter().map(|(name, _, _)| *name).collect();
                remove.extend(STATE_ATTRIBUTES.into_iter().filter(|a| !written.contains(a)));
                for (name, placeholder, value) in attributes {
                    set.push(format!("{name} = {placeholder}"));
                    values.push((placeholder, value));
                }
            }
        }
        match &commit.pre_swap {
            PreSwapWrite::Keep => {}
            PreSwapWrite::Clear => remove.push("preSwap"),
            PreSwapWrite::Set(pre) => {
                set.push("preSwap = :pre".into());
                values.push((":pre", item::pre_swap_map(pre)));
            }
        }
        let mut update = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            update.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        self.update(key, (counter, nonce), " AND leaseOwner = :me", &update, values).await
    }

    async fn release(&self, key: &str, counter: u64, me: &str, nonce: u64) -> Result<Lease, LeaseError> {
        self.update(
            key,
            (counter, nonce),
            " AND leaseOwner = :me",
            "SET leaseCounter = :next REMOVE leaseOwner",
            vec![(":me", s(me))],
        )
        .await
    }

    async fn delete(&self, key: &str, counter: u64) -> Result<(), LeaseError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("leaseKey", s(key))
            .condition_expression("leaseCounter = :c")
            .expression_attribute_values(":c", n(counter))
            .send()
            .await;
        match result {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                return Err(Conflict { key: key.into(), expected: counter }.into());
            }
            Err(e) => return Err(sdk(e, &self.table).into()),
        }
        // The lease is gone: every chunk of the shard is an orphan now.
        self.drop_states(key, &format!("{:020}", u64::MAX)).await
    }

    async fn request_hand_off(&self, key: &str, owner: &str, me: &str) -> Result<(), LeaseError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("leaseKey", s(key))
            .condition_expression("leaseOwner = :owner AND attribute_not_exists(handOffTo)")
            .update_expression("SET handOffTo = :me")
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":me", s(me))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Err(Conflict { key: key.into(), expected: 0 }.into())
            }
            Err(e) => Err(sdk(e, &self.table).into()),
        }
    }

    async fn put_state(&self, key: &str, tag: &str, layout: u32, bytes: &[u8]) -> Result<StateRef, LeaseError> {
        self.write_state(key, tag, layout, bytes).await
    }

    async fn lease_duration(&self, proposed: Duration) -> Result<Duration, LeaseError> {
        self.settle_lease_duration(proposed).await
    }

    async fn get_state(&self, key: &str, state: &StateRef) -> Result<Vec<u8>, LeaseError> {
        self.read_state(key, state).await
    }

    async fn drop_states(&self, key: &str, keep: &str) -> Result<(), LeaseError> {
        self.delete_states(key, keep).await
    }

    async fn deployment(&self) -> Result<Option<Deployment>, LeaseError> {
        self.read_deployment().await
    }

    async fn deploy(&self, next: &Deployment) -> Result<(), LeaseError> {
        self.write_deployment(next).await
    }
}

/// A failed call as a lease error: `Denied` when trying again cannot help.
fn classify<E, R>(error: SdkError<E, R>, table: &str) -> LeaseError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let permanent = matches!(
        error.code(),
        Some(
            "AccessDeniedException"
                | "ValidationException"
                | "ResourceNotFoundException"
                | "UnrecognizedClientException"
                | "ItemCollectionSizeLimitExceededException"
        )
    );
    let error = sdk(error, table);
    if permanent {
        LeaseError::Denied(error)
    } else {
        LeaseError::Table(error)
    }
}

/// One line for a failed DynamoDB call, naming the table.
fn sdk<E, R>(error: SdkError<E, R>, table: &str) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let what = crate::aws::describe(&error, "DynamoDB").replace("--endpoint-url", "--dynamodb-endpoint-url");
    anyhow::anyhow!("DynamoDB call on table `{table}` failed: {what}")
}

/// Wall-clock milliseconds, for `updatedAtMillis` (display only).
fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
