use super::*;

fn layout(register: Register, ty: PropertyType, limit: u16) -> Layout {
    Layout {
        register,
        ty,
        limit,
        scale: 1.0,
        swap: false,
        register_swap: false,
        signed: false,
    }
}

fn dec(words: &[u16], l: &Layout) -> String {
    decode_words(words, l).unwrap_or_else(|e| format!("error: {e}"))
}

#[test]
fn register_names() {
    assert_eq!(Register::parse("HoldingRegister"), Some(Register::Holding));
    assert_eq!(Register::parse("CoilRegister"), Some(Register::Coil));
    assert_eq!(
        Register::parse("DiscreteInputRegister"),
        Some(Register::DiscreteInput)
    );
    assert_eq!(Register::parse("inputregister"), Some(Register::Input));
    assert_eq!(Register::parse("holding"), Some(Register::Holding));
    assert_eq!(Register::parse("Nope"), None);
    assert!(Register::Coil.is_bits() && !Register::Input.is_writable());
}

#[test]
fn ints_follow_kubeedge_byte_order_rules() {
    let mut l = layout(Register::Holding, PropertyType::Int, 1);
    assert_eq!(dec(&[0x0102], &l), "258");
    l.swap = true;
    assert_eq!(dec(&[0x0102], &l), "513");
    let mut l = layout(Register::Holding, PropertyType::Int, 2);
    assert_eq!(dec(&[0x0001, 0x0002], &l), "65538");
    l.register_swap = true;
    assert_eq!(dec(&[0x0001, 0x0002], &l), "131073");
    l.swap = true;
    // reversed registers [0x0002, 0x0001], then bytes swapped: 02 00 01 00
    assert_eq!(dec(&[0x0001, 0x0002], &l), "33554688");
    // Unsigned, like KubeEdge.
    let l = layout(Register::Input, PropertyType::Int, 1);
    assert_eq!(dec(&[0xFFFF], &l), "65535");
    // Three registers are no integer width.
    assert!(decode_words(&[1, 2, 3], &layout(Register::Holding, PropertyType::Int, 3)).is_err());
}

#[test]
fn scale_multiplies_and_truncates_ints_and_zero_means_one() {
    let mut l = layout(Register::Holding, PropertyType::Int, 1);
    l.scale = 0.1;
    assert_eq!(dec(&[258], &l), "25");
    l.scale = 0.0;
    assert_eq!(dec(&[258], &l), "258");
    let mut l = layout(Register::Holding, PropertyType::Double, 1);
    l.scale = 0.1;
    assert_eq!(dec(&[215], &l), "21.500000");
}

#[test]
fn floats_and_doubles() {
    let w = 21.5f32.to_bits();
    let words = [(w >> 16) as u16, w as u16];
    assert_eq!(
        dec(&words, &layout(Register::Holding, PropertyType::Float, 2)),
        "21.500000"
    );
    let mut l = layout(Register::Holding, PropertyType::Float, 2);
    l.register_swap = true;
    assert_eq!(dec(&[words[1], words[0]], &l), "21.500000");
    let d = (-3.25f64).to_bits();
    let words = [
        (d >> 48) as u16,
        (d >> 32) as u16,
        (d >> 16) as u16,
        d as u16,
    ];
    assert_eq!(
        dec(&words, &layout(Register::Holding, PropertyType::Double, 4)),
        "-3.250000"
    );
    assert!(
        decode_words(
            &[1, 2, 3],
            &layout(Register::Holding, PropertyType::Float, 3)
        )
        .is_err()
    );
}

#[test]
fn booleans_strings_and_bits() {
    let l = layout(Register::Coil, PropertyType::Boolean, 1);
    assert_eq!(decode_bits(&[true], &l).ok().as_deref(), Some("true"));
    assert_eq!(
        decode_bits(&[false, true], &l).ok().as_deref(),
        Some("false")
    );
    let l = layout(Register::Coil, PropertyType::Int, 3);
    assert_eq!(
        decode_bits(&[true, false, true], &l).ok().as_deref(),
        Some("5")
    );
    let l = layout(Register::Holding, PropertyType::Boolean, 1);
    assert_eq!(dec(&[0x0001], &l), "true");
    assert_eq!(dec(&[0x0100], &l), "true");
    assert_eq!(dec(&[0], &l), "false");
    let l = layout(Register::Holding, PropertyType::String, 2);
    assert_eq!(dec(&[0x4142, 0x4300], &l), "ABC");
}

#[test]
fn writes_read_back_as_themselves() {
    let cases: Vec<(Layout, &str)> = vec![
        (layout(Register::Holding, PropertyType::Int, 1), "42"),
        (layout(Register::Holding, PropertyType::Int, 2), "70000"),
        (
            layout(Register::Holding, PropertyType::Int, 4),
            "123456789012",
        ),
        (
            layout(Register::Holding, PropertyType::Float, 2),
            "21.500000",
        ),
        (
            layout(Register::Holding, PropertyType::Double, 4),
            "-3.250000",
        ),
        (layout(Register::Holding, PropertyType::String, 2), "AB"),
        (layout(Register::Holding, PropertyType::Boolean, 1), "true"),
    ];
    for (mut l, v) in cases {
        for (swap, register_swap) in [(false, false), (true, false), (false, true), (true, true)] {
            l.swap = swap;
            l.register_swap = register_swap;
            let Ok(WriteOp::Registers(words)) = encode(v, &l) else {
                panic!("{v} did not encode for {l:?}");
            };
            assert_eq!(words.len(), usize::from(l.limit));
            assert_eq!(dec(&words, &l), v, "{l:?}");
        }
    }
    let mut l = layout(Register::Holding, PropertyType::Int, 1);
    l.scale = 0.1;
    assert_eq!(encode("25.7", &l), Ok(WriteOp::Registers(vec![257])));
}

#[test]
fn bad_writes_are_refused() {
    let l = layout(Register::Holding, PropertyType::Int, 1);
    assert!(encode("70000", &l).is_err());
    assert!(encode("x", &l).is_err());
    assert_eq!(encode("-1", &l), Ok(WriteOp::Registers(vec![0xFFFF])));
    assert!(encode("-40000", &l).is_err());
    assert!(matches!(
        encode("1", &layout(Register::Input, PropertyType::Int, 1)),
        Err(CodecError::ReadOnly(Register::Input))
    ));
    let coil = layout(Register::Coil, PropertyType::Boolean, 1);
    assert_eq!(encode("true", &coil), Ok(WriteOp::Coil(true)));
    assert_eq!(encode("0", &coil), Ok(WriteOp::Coil(false)));
    assert!(encode("2", &coil).is_err());
    assert!(encode("ABC", &layout(Register::Holding, PropertyType::String, 1)).is_err());
}

#[test]
fn negative_values_of_a_signed_property_read_back_as_written() {
    // An INT property whose DeviceModel minimum is negative (a freezer setpoint of -5).
    for limit in [1u16, 2, 4] {
        let mut l = layout(Register::Holding, PropertyType::Int, limit);
        l.signed = true;
        for v in ["-5", "-1", "0", "7"] {
            let Ok(WriteOp::Registers(words)) = encode(v, &l) else {
                panic!("{v} did not encode for {l:?}");
            };
            assert_eq!(dec(&words, &l), v, "limit {limit}");
        }
    }
    let mut l = layout(Register::Holding, PropertyType::Int, 1);
    l.signed = true;
    l.scale = 0.1;
    assert_eq!(dec(&[0xFFFB], &l), "0", "-0.5 truncates toward zero");
    assert_eq!(dec(&[0xFF9C], &l), "-10");
    // Unsigned properties keep KubeEdge's reading.
    assert_eq!(
        dec(&[0xFFFB], &layout(Register::Holding, PropertyType::Int, 1)),
        "65531"
    );
}
