use serde_json::json;

use super::codec::Layout;
use super::*;
use crate::driver::{PlanError, PropertyCommon};
use devicetwin::model::PropertyType;

fn common(name: &str, ty: PropertyType) -> PropertyCommon {
    PropertyCommon {
        name: name.into(),
        ty,
        writable: true,
        signed: false,
        collect: Duration::from_millis(100),
        report: Duration::from_millis(100),
    }
}

#[test]
fn rtu_settings() {
    let cfg = json!({"serialPort": "/dev/ttyUSB0", "baudRate": 19200, "dataBits": 8,
        "parity": "even", "stopBits": 2, "slaveID": 3, "timeout": 500});
    let p = plan(&cfg, vec![]);
    let Ok(p) = p else { panic!("{p:?}") };
    assert_eq!(
        p.transport,
        Transport::Rtu {
            path: "/dev/ttyUSB0".into(),
            baud: 19200,
            data_bits: 8,
            parity: Parity::Even,
            stop_bits: 2
        }
    );
    assert_eq!((p.slave, p.timeout), (3, Duration::from_millis(500)));
    // `port` as a path, strings for numbers, KubeEdge's nested `com` object, defaults.
    let p = plan(
        &json!({"com": {"port": "/dev/ttyS1", "baudRate": "9600"}}),
        vec![],
    );
    assert!(matches!(
        p,
        Ok(ModbusPlan {
            transport: Transport::Rtu {
                baud: 9600,
                parity: Parity::None,
                stop_bits: 1,
                ..
            },
            slave: 1,
            ..
        })
    ));
}

#[test]
fn tcp_settings_and_errors() {
    let p = plan(&json!({"ip": "127.0.0.1", "port": 1502}), vec![]);
    assert!(
        matches!(p, Ok(ModbusPlan { transport: Transport::Tcp { ref host, port: 1502 }, .. }) if host == "127.0.0.1")
    );
    let p = plan(&json!({"tcp": {"ip": "10.0.0.1"}, "slaveID": "7"}), vec![]);
    assert!(matches!(
        p,
        Ok(ModbusPlan {
            transport: Transport::Tcp { port: 502, .. },
            slave: 7,
            ..
        })
    ));
    for bad in [
        json!({}),
        json!({"port": 502}),
        json!({"serialPort": "/dev/x", "parity": "mark"}),
        json!({"serialPort": "/dev/x", "stopBits": 3}),
        json!({"ip": "h", "port": 70000}),
        json!({"ip": "h", "slaveID": 300}),
    ] {
        assert!(
            matches!(plan(&bad, vec![]), Err(PlanError::Protocol(_))),
            "{bad}"
        );
    }
}

#[test]
fn visitors_follow_kubeedge_names() {
    let v = json!({"register": "HoldingRegister", "offset": 2, "limit": 2, "scale": 0.5,
        "isSwap": true, "isRegisterSwap": "true"});
    let p = plan(
        &json!({"ip": "h"}),
        vec![(common("t", PropertyType::Float), v)],
    );
    let Ok(p) = p else { panic!("{p:?}") };
    let prop = &p.props[0];
    assert_eq!(prop.offset, 2);
    assert_eq!(
        prop.layout,
        Layout {
            register: Register::Holding,
            ty: PropertyType::Float,
            limit: 2,
            scale: 0.5,
            swap: true,
            register_swap: true,
            signed: false,
        }
    );
    for bad in [
        json!({"register": "Nope"}),
        json!({"offset": 1}),
        json!({"register": "CoilRegister", "limit": 0}),
        json!({"register": "CoilRegister", "offset": -1}),
    ] {
        let r = plan(
            &json!({"ip": "h"}),
            vec![(common("t", PropertyType::Int), bad.clone())],
        );
        assert!(matches!(r, Err(PlanError::Visitor { .. })), "{bad}");
    }
}
