#![allow(clippy::unwrap_used)]
use super::*;

fn prop(ty: PropertyType, min: Option<&str>, max: Option<&str>) -> ModelProperty {
    ModelProperty {
        minimum: min.map(Into::into),
        maximum: max.map(Into::into),
        ..ModelProperty::new("p", ty)
    }
}

#[test]
fn type_parses_case_insensitively_and_serialises_upper() {
    for (s, t) in [
        ("INT", PropertyType::Int),
        ("int", PropertyType::Int),
        ("Double", PropertyType::Double),
    ] {
        assert_eq!(s.parse::<PropertyType>().unwrap(), t);
    }
    assert!("integer".parse::<PropertyType>().is_err());
    let t: PropertyType = serde_json::from_str("\"boolean\"").unwrap();
    assert_eq!(t, PropertyType::Boolean);
    assert_eq!(serde_json::to_string(&t).unwrap(), "\"BOOLEAN\"");
    assert_eq!(PropertyType::Bytes.wire_name(), "bytes");
}

#[test]
fn access_mode_parses_case_insensitively() {
    let m: AccessMode = serde_json::from_str("\"readonly\"").unwrap();
    assert_eq!(m, AccessMode::ReadOnly);
    assert!(serde_json::from_str::<AccessMode>("\"WriteOnly\"").is_err());
    assert!(ModelProperty::new("p", PropertyType::Int).is_writable());
}

#[test]
fn int_values() {
    let p = prop(PropertyType::Int, Some("1"), Some("100"));
    assert_eq!(p.check_value("50"), Ok(()));
    assert_eq!(p.check_value("1"), Ok(()));
    assert_eq!(p.check_value("100"), Ok(()));
    assert_eq!(
        p.check_value("0"),
        Err(ValueError::BelowMinimum("1".into()))
    );
    assert_eq!(
        p.check_value("101"),
        Err(ValueError::AboveMaximum("100".into()))
    );
    assert_eq!(
        p.check_value("2.5"),
        Err(ValueError::TypeMismatch(PropertyType::Int))
    );
    assert_eq!(
        p.check_value("abc"),
        Err(ValueError::TypeMismatch(PropertyType::Int))
    );
    assert_eq!(
        p.check_value(""),
        Err(ValueError::TypeMismatch(PropertyType::Int))
    );
}

#[test]
fn float_and_double_values() {
    for ty in [PropertyType::Float, PropertyType::Double] {
        let p = prop(ty, Some("-1.5"), Some("1.5"));
        assert_eq!(p.check_value("0.25"), Ok(()));
        assert_eq!(
            p.check_value("-2"),
            Err(ValueError::BelowMinimum("-1.5".into()))
        );
        assert_eq!(
            p.check_value("1.51"),
            Err(ValueError::AboveMaximum("1.5".into()))
        );
        assert_eq!(p.check_value("NaN"), Err(ValueError::TypeMismatch(ty)));
        assert_eq!(p.check_value("inf"), Err(ValueError::TypeMismatch(ty)));
        assert_eq!(p.check_value("x"), Err(ValueError::TypeMismatch(ty)));
    }
}

#[test]
fn boolean_string_bytes_values() {
    let b = prop(PropertyType::Boolean, None, None);
    for v in ["true", "false", "1", "0", "T", "False"] {
        assert_eq!(b.check_value(v), Ok(()), "{v}");
    }
    assert_eq!(
        b.check_value("yes"),
        Err(ValueError::TypeMismatch(PropertyType::Boolean))
    );
    // Bounds do not apply to non-numeric types.
    for ty in [
        PropertyType::String,
        PropertyType::Bytes,
        PropertyType::Stream,
    ] {
        assert_eq!(
            prop(ty, Some("5"), Some("1")).check_value("anything"),
            Ok(())
        );
    }
}

#[test]
fn unparseable_bounds_are_ignored_by_value_checks_and_reported_by_validate() {
    let p = prop(PropertyType::Int, Some("low"), None);
    assert_eq!(p.check_value("-5"), Ok(()));
    let model = DeviceModelSpec {
        properties: vec![p],
        ..DeviceModelSpec::default()
    };
    assert!(matches!(
        model.validate(),
        Err(ModelError::InvalidBound {
            which: "minimum",
            ..
        })
    ));
}

#[test]
fn validate_model() {
    let ok = DeviceModelSpec {
        properties: vec![
            prop(PropertyType::Int, Some("1"), Some("100")),
            ModelProperty::new("q", PropertyType::String),
        ],
        ..DeviceModelSpec::default()
    };
    assert_eq!(ok.validate(), Ok(()));
    let dup = DeviceModelSpec {
        properties: vec![
            ModelProperty::new("a", PropertyType::Int),
            ModelProperty::new("a", PropertyType::Int),
        ],
        ..DeviceModelSpec::default()
    };
    assert_eq!(
        dup.validate(),
        Err(ModelError::DuplicateProperty("a".into()))
    );
    let empty = DeviceModelSpec {
        properties: vec![ModelProperty::new("", PropertyType::Int)],
        ..DeviceModelSpec::default()
    };
    assert_eq!(empty.validate(), Err(ModelError::EmptyName));
    let range = DeviceModelSpec {
        properties: vec![prop(PropertyType::Double, Some("5"), Some("1"))],
        ..DeviceModelSpec::default()
    };
    assert_eq!(range.validate(), Err(ModelError::EmptyRange("p".into())));
    assert!(ok.property("q").is_some() && ok.property("zz").is_none());
}

#[test]
fn model_tolerates_unknown_fields() {
    let m: DeviceModel = serde_json::from_value(serde_json::json!({
        "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
        "metadata": {"name": "m", "labels": {"a": "b"}},
        "spec": {"protocol": "modbus", "future": 1,
                 "properties": [{"name": "t", "type": "INT", "accessMode": "ReadOnly", "extra": true}]}
    }))
    .unwrap();
    assert_eq!(m.spec.properties[0].access_mode, Some(AccessMode::ReadOnly));
    assert!(!m.spec.properties[0].is_writable());
}

#[test]
fn boolean_desired_synonyms_normalise_to_true_and_false() {
    let p = prop(PropertyType::Boolean, None, None);
    for v in [
        "on", "ON", "On", "1", "true", "TRUE", "True", "t", "high", "HIGH", "yes", " on ",
    ] {
        assert_eq!(p.normalize_desired(v), "true", "{v:?}");
        assert_eq!(p.check_desired(v), Ok("true".to_owned()), "{v:?}");
    }
    for v in ["off", "OFF", "Off", "0", "false", "False", "f", "low", "no"] {
        assert_eq!(p.normalize_desired(v), "false", "{v:?}");
        assert_eq!(p.check_desired(v), Ok("false".to_owned()), "{v:?}");
    }
    for v in ["maybe", "", "2", "onn"] {
        assert_eq!(p.normalize_desired(v), v);
        assert_eq!(
            p.check_desired(v),
            Err(ValueError::TypeMismatch(PropertyType::Boolean))
        );
    }
    // Only BOOLEAN values are respelled.
    let s = prop(PropertyType::String, None, None);
    assert_eq!(s.normalize_desired("on"), "on");
    let i = prop(PropertyType::Int, None, None);
    assert_eq!(i.normalize_desired("1"), "1");
    assert_eq!(
        i.check_desired("on"),
        Err(ValueError::TypeMismatch(PropertyType::Int))
    );
}

#[test]
fn desired_checks_access_type_and_bounds() {
    let p = prop(PropertyType::Int, Some("-40"), Some("100"));
    assert_eq!(p.check_desired("30"), Ok("30".to_owned()));
    assert_eq!(p.check_desired("-40"), Ok("-40".to_owned()));
    assert_eq!(p.check_desired("100"), Ok("100".to_owned()));
    assert_eq!(
        p.check_desired("abc"),
        Err(ValueError::TypeMismatch(PropertyType::Int))
    );
    assert_eq!(
        p.check_desired("101"),
        Err(ValueError::AboveMaximum("100".into()))
    );
    assert_eq!(
        p.check_desired("-41"),
        Err(ValueError::BelowMinimum("-40".into()))
    );
    let ro = ModelProperty {
        access_mode: Some(AccessMode::ReadOnly),
        ..prop(PropertyType::Int, None, None)
    };
    assert_eq!(ro.check_desired("1"), Err(ValueError::ReadOnly));
    let reasons: Vec<&str> = [
        ValueError::TypeMismatch(PropertyType::Int),
        ValueError::BelowMinimum("1".into()),
        ValueError::AboveMaximum("1".into()),
        ValueError::ReadOnly,
    ]
    .iter()
    .map(ValueError::reason)
    .collect();
    assert_eq!(
        reasons,
        [
            "type_mismatch",
            "below_minimum",
            "above_maximum",
            "read_only_property"
        ]
    );
}

#[test]
fn int_spelt_as_an_integral_float_normalises_to_the_integer() {
    let p = prop(PropertyType::Int, None, Some("100"));
    for (raw, want) in [
        ("23.0", "23"),
        ("23.000", "23"),
        ("-4.0", "-4"),
        ("2.3e1", "23"),
        ("23", "23"),
        ("23.5", "23.5"),
        ("abc", "abc"),
        ("NaN", "NaN"),
        ("1e300", "1e300"),
    ] {
        assert_eq!(p.normalize_value(raw), want, "{raw}");
        assert_eq!(p.normalize_desired(raw), want, "{raw}");
    }
    assert_eq!(p.check_desired("23.0"), Ok("23".into()));
    assert_eq!(
        p.check_desired("23.5"),
        Err(ValueError::TypeMismatch(PropertyType::Int))
    );
    assert_eq!(
        p.check_desired("200.0"),
        Err(ValueError::AboveMaximum("100".into()))
    );
    // Other types keep their spelling.
    let d = prop(PropertyType::Double, None, None);
    assert_eq!(d.normalize_value("23.0"), "23.0");
}

#[test]
fn value_length_is_part_of_the_value_check() {
    let p = prop(PropertyType::String, None, None);
    let max = "é".repeat(crate::payload::MAX_VALUE_LEN);
    assert_eq!(p.check_value(&max), Ok(()));
    let over = format!("{max}x");
    assert_eq!(
        p.check_value(&over),
        Err(ValueError::TooLong(crate::payload::MAX_VALUE_LEN + 1))
    );
    assert_eq!(
        p.check_desired(&over).map_err(|e| e.reason()),
        Err("value_too_long")
    );
    assert_eq!(
        check_value_len(&over).map_err(|e| e.reason()),
        Err("value_too_long")
    );
}
