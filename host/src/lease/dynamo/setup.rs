//! Creating and checking the lease and state tables.

use super::{sdk, DynamoTable, TableSetup};
use anyhow::Context;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use std::time::Duration;

impl DynamoTable {
    pub(super) async fn ensure(&self, name: &str, keys: &[(&str, KeyType)], setup: TableSetup) -> anyhow::Result<()> {
        match self.client.describe_table().table_name(name).send().await {
            Ok(found) => {
                let schema = found.table().map(|t| t.key_schema()).unwrap_or_default();
                let got: Vec<(&str, &KeyType)> = schema.iter().map(|k| (k.attribute_name(), k.key_type())).collect();
                let want: Vec<(&str, &KeyType)> = keys.iter().map(|(n, t)| (*n, t)).collect();
                if got != want {
                    anyhow::bail!(
                        "table `{name}` has the key {got:?}, not {want:?}: it is not a lease table of this host; \
                         give --lease-table a table of its own"
                    );
                }
                if found.table().and_then(|t| t.table_status()) != Some(&TableStatus::Active) {
                    self.wait_active(name).await?;
                }
                Ok(())
            }
            Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {
                let key_text = keys.iter().map(|(n, t)| format!("{n} {t}")).collect::<Vec<_>>().join(", ");
                match setup {
                    TableSetup::MustExist => anyhow::bail!(
                        "DynamoDB table `{name}` does not exist and --no-create-table was given; \
                         create it (key {key_text}) or drop --no-create-table"
                    ),
                    TableSetup::Inspect => anyhow::bail!(
                        "there is no DynamoDB table `{name}` (check --lease-table, --region and --dynamodb-endpoint-url)"
                    ),
                    TableSetup::CreateIfMissing => {}
                }
                self.create(name, keys).await
            }
            Err(e) => Err(sdk(e, name)),
        }
    }

    async fn create(&self, name: &str, keys: &[(&str, KeyType)]) -> anyhow::Result<()> {
        tracing::info!("creating DynamoDB table {name} (on-demand billing)");
        let mut create = self.client.create_table().table_name(name).billing_mode(BillingMode::PayPerRequest);
        for (key, kind) in keys {
            create = create
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(*key)
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .context("table definition")?,
                )
                .key_schema(
                    KeySchemaElement::builder().attribute_name(*key).key_type(kind.clone()).build().context("key")?,
                );
        }
        match create.send().await {
            Ok(_) => {}
            // Another worker created it at the same moment.
            Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => {}
            Err(e) => {
                let code = e.code().unwrap_or_default().to_string();
                let e = sdk(e, name);
                if code == "AccessDeniedException" {
                    return Err(e.context(format!(
                        "no permission to create the lease table `{name}`: create it (or ask for \
                         dynamodb:CreateTable) and run with --no-create-table"
                    )));
                }
                return Err(e);
            }
        }
        self.wait_active(name).await
    }

    async fn wait_active(&self, name: &str) -> anyhow::Result<()> {
        for _ in 0..300 {
            let found = self.client.describe_table().table_name(name).send().await.map_err(|e| sdk(e, name))?;
            if found.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::bail!("DynamoDB table `{name}` did not become ACTIVE within 60 s")
    }
}
