//! The Arrow side of the records: the schema derived from the Avro schema, and the batch
//! builder the lake writer uses.
//!
//! The Arrow schema is computed from the `.avsc`, not written by hand, so the Parquet columns
//! are the Avro fields by construction. Mapping: `string` -> Utf8, `long` -> Int64,
//! `int` -> Int32, `double` -> Float64, `boolean` -> Boolean,
//! `long`/`timestamp-micros` -> Timestamp(µs, UTC), `["null", T]` -> nullable T,
//! `map<T>` -> Map(Utf8 -> T) with the Parquet-standard `key_value`/`key`/`value` names.

use std::sync::{Arc, LazyLock};

use apache_avro::Schema as AvroSchema;
use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, MapBuilder,
    MapFieldNames, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use crate::{Telemetry, TelemetryCodec};

/// Time zone of every timestamp column.
pub const UTC: &str = "UTC";

static TELEMETRY_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    // Checked by a unit test: the bundled schema only uses mapped types.
    Arc::new(from_avro(TelemetryCodec::schema()).expect("Telemetry maps to Arrow"))
});

/// The Arrow schema of [`Telemetry`].
pub fn telemetry_schema() -> SchemaRef {
    TELEMETRY_SCHEMA.clone()
}

#[derive(Debug, thiserror::Error)]
#[error("Avro field `{field}`: {reason}")]
pub struct UnsupportedAvro {
    field: String,
    reason: String,
}

/// Derives an Arrow schema from an Avro record schema.
pub fn from_avro(schema: &AvroSchema) -> Result<Schema, UnsupportedAvro> {
    let AvroSchema::Record(record) = schema else {
        return Err(UnsupportedAvro {
            field: "<root>".into(),
            reason: "the root must be a record".into(),
        });
    };
    let fields = record
        .fields
        .iter()
        .map(|f| field(&f.name, &f.schema))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Schema::new(fields))
}

fn field(name: &str, schema: &AvroSchema) -> Result<Field, UnsupportedAvro> {
    if let AvroSchema::Union(union) = schema {
        let variants = union.variants();
        let non_null: Vec<&AvroSchema> = variants
            .iter()
            .filter(|v| !matches!(v, AvroSchema::Null))
            .collect();
        return match non_null.as_slice() {
            [inner] if variants.len() == 2 => Ok(field(name, inner)?.with_nullable(true)),
            _ => Err(UnsupportedAvro {
                field: name.into(),
                reason: "only [\"null\", T] unions are supported".into(),
            }),
        };
    }
    Ok(Field::new(name, data_type(name, schema)?, false))
}

fn data_type(name: &str, schema: &AvroSchema) -> Result<DataType, UnsupportedAvro> {
    Ok(match schema {
        AvroSchema::String => DataType::Utf8,
        AvroSchema::Long => DataType::Int64,
        AvroSchema::Int => DataType::Int32,
        AvroSchema::Double => DataType::Float64,
        AvroSchema::Boolean => DataType::Boolean,
        AvroSchema::TimestampMicros => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
        AvroSchema::Map(map) => {
            let entries = Field::new(
                "key_value",
                DataType::Struct(Fields::from(vec![
                    Field::new("key", DataType::Utf8, false),
                    field("value", &map.types)?,
                ])),
                false,
            );
            DataType::Map(Arc::new(entries), false)
        }
        other => {
            return Err(UnsupportedAvro {
                field: name.into(),
                reason: format!("no Arrow mapping for {other:?}"),
            });
        }
    })
}

/// The value field of the map column `name` in the telemetry schema.
fn map_value_field(name: &str) -> Result<FieldRef, ArrowError> {
    let schema = telemetry_schema();
    let field = schema.field_with_name(name)?;
    match field.data_type() {
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(fields) if fields.len() == 2 => Ok(fields[1].clone()),
            _ => Err(ArrowError::SchemaError(format!("{name}: malformed map"))),
        },
        _ => Err(ArrowError::SchemaError(format!("{name} is not a map"))),
    }
}

fn map_names() -> MapFieldNames {
    MapFieldNames {
        entry: "key_value".into(),
        key: "key".into(),
        value: "value".into(),
    }
}

/// Turns records into one Arrow batch with exactly [`telemetry_schema`].
pub fn telemetry_batch(records: &[Telemetry]) -> Result<RecordBatch, ArrowError> {
    let n = records.len();
    let strings = |f: fn(&Telemetry) -> &str| {
        let mut b = StringBuilder::with_capacity(n, n * 12);
        records.iter().for_each(|r| b.append_value(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    let opt_strings = |f: fn(&Telemetry) -> Option<&str>| {
        let mut b = StringBuilder::with_capacity(n, n * 4);
        records.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    let micros = |f: fn(&Telemetry) -> i64| {
        let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone(UTC);
        records.iter().for_each(|r| b.append_value(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    let doubles = |f: fn(&Telemetry) -> Option<f64>| {
        let mut b = Float64Builder::with_capacity(n);
        records.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };

    let mut seq = Int64Builder::with_capacity(n);
    let mut motion = BooleanBuilder::with_capacity(n);
    let mut occupancy = Int32Builder::with_capacity(n);
    let mut extra = MapBuilder::new(
        Some(map_names()),
        StringBuilder::new(),
        Float64Builder::new(),
    )
    .with_values_field(map_value_field("extra")?);
    let mut properties = MapBuilder::new(
        Some(map_names()),
        StringBuilder::new(),
        StringBuilder::new(),
    )
    .with_values_field(map_value_field("properties")?);
    for r in records {
        seq.append_value(r.seq);
        motion.append_option(r.motion);
        occupancy.append_option(r.occupancy);
        for (k, v) in &r.extra {
            extra.keys().append_value(k);
            extra.values().append_value(*v);
        }
        extra.append(true)?;
        for (k, v) in &r.properties {
            properties.keys().append_value(k);
            properties.values().append_value(v);
        }
        properties.append(true)?;
    }

    // Same order as the Avro fields; RecordBatch::try_new checks every type against the schema.
    let columns: Vec<ArrayRef> = vec![
        strings(|r| &r.tenant),
        strings(|r| &r.building),
        opt_strings(|r| r.floor.as_deref()),
        opt_strings(|r| r.room.as_deref()),
        strings(|r| &r.device),
        Arc::new(seq.finish()),
        micros(|r| r.event_time),
        micros(|r| r.ingest_time),
        strings(|r| &r.protocol),
        doubles(|r| r.temperature),
        doubles(|r| r.humidity),
        doubles(|r| r.light),
        doubles(|r| r.co2),
        doubles(|r| r.pressure),
        doubles(|r| r.noise),
        Arc::new(motion.finish()),
        Arc::new(occupancy.finish()),
        doubles(|r| r.battery),
        Arc::new(extra.finish()),
        Arc::new(properties.finish()),
    ];
    RecordBatch::try_new(telemetry_schema(), columns)
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type};

    use super::*;

    #[test]
    fn schema_follows_the_avro_fields() {
        let schema = telemetry_schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names[..6],
            ["tenant", "building", "floor", "room", "device", "seq"]
        );
        assert!(!schema.field_with_name("tenant").unwrap().is_nullable());
        assert!(schema.field_with_name("temperature").unwrap().is_nullable());
        assert_eq!(
            schema.field_with_name("event_time").unwrap().data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
        );
        assert_eq!(
            schema.field_with_name("occupancy").unwrap().data_type(),
            &DataType::Int32
        );
    }

    #[test]
    fn batches_carry_every_value() {
        let mut a = crate::codec::tests::sample();
        let mut b = a.clone();
        b.seq = 8;
        b.temperature = None;
        b.extra.clear();
        a.extra.insert("pm25".into(), 4.0);
        let batch = telemetry_batch(&[a.clone(), b]).unwrap();
        assert_eq!(batch.num_rows(), 2);
        let seq = batch
            .column_by_name("seq")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(seq.values(), &[7, 8]);
        let t = batch
            .column_by_name("temperature")
            .unwrap()
            .as_primitive::<Float64Type>();
        assert_eq!(t.value(0), 21.5);
        assert!(t.is_null(1));
        let extra = batch.column_by_name("extra").unwrap().as_map();
        assert_eq!(extra.value(0).len(), 2);
        assert_eq!(extra.value(1).len(), 0);
        assert!(telemetry_batch(&[]).unwrap().num_rows() == 0);
    }
}
