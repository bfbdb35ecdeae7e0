use serde_json::json;

use super::*;
use devicetwin::DeviceModel;

fn device(v: serde_json::Value) -> Device {
    serde_json::from_value(v).unwrap_or_default()
}

fn model(v: serde_json::Value) -> DeviceModelSpec {
    serde_json::from_value::<DeviceModel>(v)
        .map(|m| m.spec)
        .unwrap_or_default()
}

#[test]
fn kubeedge_sample_plans_as_modbus_tcp_without_dialling() {
    // The shape of KubeEdge's documentation sample (parsed only; never connected to).
    let d = device(json!({"metadata": {"name": "beta1-device"}, "spec": {
        "deviceModelRef": {"name": "beta1-model"},
        "properties": [{"name": "temp", "collectCycle": 10000000000i64, "reportCycle": 10000000000i64,
            "desired": {"value": "30"},
            "visitors": {"protocolName": "modbus", "configData": {"register": "HoldingRegister",
                "offset": 2, "limit": 1, "scale": 1, "isSwap": true, "isRegisterSwap": true}}}],
        "protocol": {"protocolName": "modbus", "configData": {"ip": "192.0.2.1", "port": 1502}}}}));
    let m = model(
        json!({"spec": {"properties": [{"name": "temp", "type": "INT",
        "accessMode": "ReadWrite", "maximum": "100", "minimum": "1"}], "protocol": "modbus"}}),
    );
    let p = plan(&d, Some(&m));
    let Ok(Some(Plan::Modbus(p))) = p else {
        panic!("{p:?}")
    };
    assert_eq!(p.props.len(), 1);
    let prop = &p.props[0];
    assert_eq!(prop.common.ty, PropertyType::Int);
    assert!(prop.common.writable);
    assert!(!prop.common.signed, "minimum 1: unsigned registers");
    assert_eq!(prop.common.collect, MAX_CYCLE, "absurd cycles are clamped");
    let m =
        model(json!({"spec": {"properties": [{"name": "temp", "type": "INT", "minimum": "-40"}]}}));
    let Ok(Some(Plan::Modbus(p))) = plan(&d, Some(&m)) else {
        panic!("still modbus")
    };
    assert!(
        p.props[0].common.signed,
        "a negative minimum reads two's complement"
    );
    assert!(p.props[0].layout.signed);
}

#[test]
fn protocol_dispatch_and_fallbacks() {
    let gpio = device(json!({"metadata": {"name": "g"}, "spec": {
        "protocol": {"protocolName": "gpio"},
        "properties": [{"name": "led", "collectCycle": 5, "visitors": {"configData": {"pin": 17, "direction": "out"}}},
                       {"name": "nodata"}]}}));
    let p = plan(&gpio, None);
    let Ok(Some(Plan::Gpio(g))) = p else {
        panic!("{p:?}")
    };
    assert_eq!(
        g.props.len(),
        1,
        "properties without configData are not driven"
    );
    assert_eq!(g.props[0].common.collect, MIN_CYCLE);
    assert_eq!(g.props[0].common.ty, PropertyType::String);

    let other = device(
        json!({"metadata": {"name": "o"}, "spec": {"protocol": {"protocolName": "bluetooth"}}}),
    );
    assert!(matches!(plan(&other, None), Ok(None)));
    let none = device(json!({"metadata": {"name": "o"}, "spec": {}}));
    assert!(matches!(plan(&none, None), Ok(None)));

    // Protocol and visitor settings may come from the DeviceModel.
    let d = device(json!({"metadata": {"name": "m"}, "spec": {"properties": [{"name": "t"}]}}));
    let m = model(
        json!({"spec": {"protocol": "modbus", "protocolConfigData": {"ip": "127.0.0.1"},
        "properties": [{"name": "t", "type": "DOUBLE", "accessMode": "ReadOnly",
            "visitors": {"configData": {"register": "InputRegister"}}}]}}),
    );
    let p = plan(&d, Some(&m));
    let Ok(Some(Plan::Modbus(p))) = p else {
        panic!("{p:?}")
    };
    assert!(!p.props[0].common.writable);
    assert_eq!(p.props[0].common.ty, PropertyType::Double);

    let broken = device(
        json!({"metadata": {"name": "b"}, "spec": {"protocol": {"protocolName": "modbus", "configData": {}}}}),
    );
    assert!(matches!(plan(&broken, None), Err(PlanError::Protocol(_))));
}

#[test]
fn reporter_sends_changes_at_once_and_repeats_after_the_report_cycle() {
    let t0 = Instant::now();
    let mut r = Reporter::default();
    let cycle = Duration::from_millis(100);
    assert!(r.should_send("a", "1", cycle, t0));
    assert!(!r.should_send("a", "1", cycle, t0 + Duration::from_millis(50)));
    assert!(r.should_send("a", "2", cycle, t0 + Duration::from_millis(60)));
    assert!(!r.should_send("a", "2", cycle, t0 + Duration::from_millis(150)));
    assert!(r.should_send("a", "2", cycle, t0 + Duration::from_millis(160)));
    assert!(r.should_send("b", "2", cycle, t0));
    r.reset();
    assert!(r.should_send("a", "2", cycle, t0 + Duration::from_millis(170)));
}

#[tokio::test]
async fn a_restarted_driver_waits_for_its_predecessor_to_release_the_port() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    // The "port": held by the old task until it has wound down (300 ms after cancel).
    let port = Arc::new(AtomicBool::new(true));
    let cancel = CancellationToken::new();
    let old = {
        let (port, cancel) = (port.clone(), cancel.clone());
        tokio::spawn(async move {
            cancel.cancelled().await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            port.store(false, Ordering::SeqCst);
        })
    };
    cancel.cancel();
    let start = Instant::now();
    let opened_free = {
        let port = port.clone();
        spawn_after(Some(old), async move {
            assert!(
                !port.load(Ordering::SeqCst),
                "opened while the old driver held the port"
            );
        })
    };
    opened_free.await.unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < RESTART_WAIT,
        "{waited:?}"
    );

    // A predecessor that never ends delays the new driver by RESTART_WAIT only.
    let stuck = tokio::spawn(std::future::pending::<()>());
    let start = Instant::now();
    spawn_after(Some(stuck), async {}).await.unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= RESTART_WAIT && waited < RESTART_WAIT * 2,
        "{waited:?}"
    );
}
