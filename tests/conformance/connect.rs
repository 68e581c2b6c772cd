//! CONNECT and CONNACK (MQTT 3.1.1 §3.1–3.2, MQTT 5.0 §3.1–3.2).

use seed_broker::codec::{Packet, Protocol, ReasonCode};

use crate::client::{Client, TestServer, v5, v311, v311_persistent};

/// A 3.1.1 CONNECT with client id "a", clean session, keep-alive 60, and the given
/// protocol name, level and flags.
fn raw_connect(name: &[u8], level: u8, flags: u8) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(name.len() as u16).to_be_bytes());
    body.extend_from_slice(name);
    body.extend_from_slice(&[level, flags, 0, 60, 0, 1, b'a']);
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

/// [MQTT-3.1.0-1] After a Network Connection is established by a Client to a Server, the
/// first Packet sent from the Client to the Server MUST be a CONNECT Packet.
#[tokio::test]
async fn mqtt_3_1_0_1_first_packet_must_be_connect() {
    let server = TestServer::start().await;
    let mut client = Client::tcp(server.addr, Protocol::V3_1_1).await;
    client.send(Packet::PingReq).await;
    assert!(client.expect_closed().await.is_none());
}

/// [MQTT-3.1.0-2] The Server MUST process a second CONNECT Packet sent from a Client as a
/// protocol violation and disconnect the Client.
#[tokio::test]
async fn mqtt_3_1_0_2_second_connect_is_a_protocol_violation() {
    let server = TestServer::start().await;
    let mut client = server.v311("second-connect").await;
    client.send(Packet::Connect(Box::new(v311("second-connect")))).await;
    assert!(client.expect_closed().await.is_none());
}

/// [MQTT-3.1.0-2] (5.0: "The Server MUST process a second CONNECT packet sent from a Client
/// as a Protocol Error and close the Network Connection"): a 5.0 client is told 0x82.
#[tokio::test]
async fn mqtt_3_1_0_2_v5_second_connect_is_a_protocol_error() {
    let server = TestServer::start().await;
    let mut client = server.v5("second-connect-5").await;
    client.send(Packet::Connect(Box::new(v5("second-connect-5")))).await;
    client.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
}

/// [MQTT-3.1.2-1] If the protocol name is incorrect the Server MAY disconnect the Client, or
/// it MAY continue processing the CONNECT packet in accordance with some other specification.
/// Seed knows no other: it must not accept the connection.
#[tokio::test]
async fn mqtt_3_1_2_1_incorrect_protocol_name_is_not_accepted() {
    let server = TestServer::start().await;
    let mut client = Client::tcp(server.addr, Protocol::V3_1_1).await;
    client.send_raw(&raw_connect(b"MQTX", 4, 0x02)).await;
    match client.recv(crate::client::TIMEOUT).await {
        Ok(None) => {}
        Ok(Some(Packet::ConnAck(connack))) => {
            assert_ne!(connack.code, ReasonCode::SUCCESS);
            client.expect_closed().await;
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// [MQTT-3.1.2-2] The Server MUST respond to the CONNECT Packet with a CONNACK return code
/// 0x01 (unacceptable protocol level) and then disconnect the Client if the Protocol Level
/// is not supported by the Server.
#[tokio::test]
async fn mqtt_3_1_2_2_unsupported_protocol_level_gets_connack_0x01() {
    let server = TestServer::start().await;
    let mut client = Client::tcp(server.addr, Protocol::V3_1_1).await;
    client.send_raw(&raw_connect(b"MQTT", 7, 0x02)).await;
    match client.expect().await {
        Packet::ConnAck(connack) => {
            assert_eq!(connack.code, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
            assert!(!connack.session_present);
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
    client.expect_closed().await;
}

/// [MQTT-3.1.2-3] The Server MUST validate that the reserved flag in the CONNECT Control
/// Packet is set to zero and disconnect the Client if it is not zero.
#[tokio::test]
async fn mqtt_3_1_2_3_reserved_connect_flag_must_be_zero() {
    let server = TestServer::start().await;
    let mut client = Client::tcp(server.addr, Protocol::V3_1_1).await;
    client.send_raw(&raw_connect(b"MQTT", 4, 0x03)).await;
    assert!(client.expect_closed().await.is_none());
}

/// [MQTT-3.1.2-11] If the Will Flag is set to 0 the Will QoS and Will Retain fields in the
/// Connect Flags MUST be set to zero; [MQTT-3.1.2-13] Will QoS MUST be 0 without a will.
#[tokio::test]
async fn mqtt_3_1_2_13_will_qos_without_will_flag_is_refused() {
    let server = TestServer::start().await;
    let mut client = Client::tcp(server.addr, Protocol::V3_1_1).await;
    // Clean session + will QoS 1, will flag clear.
    client.send_raw(&raw_connect(b"MQTT", 4, 0x0A)).await;
    assert!(client.expect_closed().await.is_none());
}

/// [MQTT-3.1.2-22] If the User Name Flag is set to 0, the Password Flag MUST be set to 0.
#[tokio::test]
async fn mqtt_3_1_2_22_password_without_user_name_is_refused() {
    let server = TestServer::start().await;
    let mut client = Client::tcp(server.addr, Protocol::V3_1_1).await;
    // The password field must then follow the client id.
    let mut packet = raw_connect(b"MQTT", 4, 0x42);
    packet.extend_from_slice(&[0, 1, b'p']);
    packet[1] += 3;
    client.send_raw(&packet).await;
    assert!(client.expect_closed().await.is_none());
}

/// [MQTT-3.1.3-6] A Server MAY allow a Client to supply a ClientId that has a length of zero
/// bytes, however if it does so the Server MUST treat this as a special case and assign a
/// unique ClientId to that Client. [MQTT-3.1.3-7] ... the Client MUST also set CleanSession
/// to 1.
#[tokio::test]
async fn mqtt_3_1_3_6_empty_client_id_with_clean_session_is_accepted() {
    let server = TestServer::start().await;
    let (mut a, connack) = Client::connect(server.addr, v311("")).await;
    assert_eq!(connack.code, ReasonCode::SUCCESS);
    assert!(!connack.session_present);
    // Two such clients are distinct: both stay connected.
    let (mut b, connack) = Client::connect(server.addr, v311("")).await;
    assert_eq!(connack.code, ReasonCode::SUCCESS);
    a.sync().await;
    b.sync().await;
}

/// [MQTT-3.1.3-8] If the Client supplies a zero-byte ClientId with CleanSession set to 0,
/// the Server MUST respond to the CONNECT Packet with a CONNACK return code 0x02 (Identifier
/// rejected) and then close the Network Connection.
#[tokio::test]
async fn mqtt_3_1_3_8_empty_client_id_without_clean_session_is_rejected() {
    let server = TestServer::start().await;
    let (mut client, connack) = Client::connect(server.addr, v311_persistent("")).await;
    assert_eq!(connack.code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    client.expect_closed().await;
}

/// [MQTT-3.1.3-9] If the Server rejects the ClientId it MUST respond to the CONNECT Packet
/// with a CONNACK return code 0x02 (Identifier rejected) and then close the Network
/// Connection. (Seed rejects ids longer than its configured maximum.)
#[tokio::test]
async fn mqtt_3_1_3_9_rejected_client_id_gets_connack_0x02() {
    let server = TestServer::with(|b| b.max_client_id_len = 8).await;
    let (mut client, connack) = Client::connect(server.addr, v311("much-too-long-id")).await;
    assert_eq!(connack.code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    assert!(!connack.session_present);
    client.expect_closed().await;
}

/// [MQTT-3.2.2-5] (5.0 §3.2.2.3.7, [MQTT-3.2.2-16]): if the Client connects using a zero
/// length Client Identifier, the Server MUST respond with a CONNACK containing an Assigned
/// Client Identifier.
#[tokio::test]
async fn mqtt_3_2_2_16_v5_assigned_client_identifier() {
    let server = TestServer::start().await;
    let (_client, connack) = server.connect(v5("")).await;
    let assigned = connack.properties.assigned_client_identifier.expect("assigned client id");
    assert!(!assigned.is_empty());
    let (_other, connack) = server.connect(v5("")).await;
    assert_ne!(connack.properties.assigned_client_identifier, Some(assigned), "ids are unique");
}

/// [MQTT-3.1.4-2] If the ClientId represents a Client already connected to the Server then
/// the Server MUST disconnect the existing Client.
#[tokio::test]
async fn mqtt_3_1_4_2_existing_client_is_disconnected_on_take_over() {
    let server = TestServer::start().await;
    let mut old = server.v311("take-over").await;
    let mut new = server.v311("take-over").await;
    assert!(old.expect_closed().await.is_none());
    new.sync().await;
}

/// [MQTT-3.1.4-3] (5.0): If the ClientID represents a Client already connected to the Server,
/// the Server sends a DISCONNECT packet to the existing Client with Reason Code of 0x8E
/// (Session taken over) and MUST close the Network Connection of the existing Client.
#[tokio::test]
async fn mqtt_3_1_4_3_v5_take_over_sends_disconnect_0x8e() {
    let server = TestServer::start().await;
    let mut old = server.v5("take-over-5").await;
    let mut new = server.v5("take-over-5").await;
    old.expect_disconnect(ReasonCode::SESSION_TAKEN_OVER).await;
    new.sync().await;
}

/// [MQTT-3.2.0-1] The first packet sent from the Server to the Client MUST be a CONNACK
/// Packet.
#[tokio::test]
async fn mqtt_3_2_0_1_first_server_packet_is_connack() {
    let server = TestServer::start().await;
    let mut publisher = server.v311("connack-first-pub").await;
    let mut sub = server.connect(v311_persistent("connack-first")).await.0;
    sub.subscribe("t/connack", seed_broker::codec::QoS::AtLeastOnce).await;
    sub.drop_abruptly();
    publisher.publish_qos1("t/connack", b"queued", 1).await;
    // A message is waiting for the session; CONNACK still comes first.
    let (mut sub, connack) = Client::connect(server.addr, v311_persistent("connack-first")).await;
    assert!(connack.session_present);
    assert_eq!(sub.expect_publish().await.payload.as_ref(), b"queued");
}

/// [MQTT-3.2.2-1] If the Server accepts a connection with CleanSession set to 1, the Server
/// MUST set Session Present to 0 in the CONNACK packet in addition to setting a zero return
/// code in the CONNACK packet.
#[tokio::test]
async fn mqtt_3_2_2_1_clean_session_connack_has_session_present_0() {
    let server = TestServer::start().await;
    server.connect(v311_persistent("sp-clean")).await.0.disconnect().await;
    let (_client, connack) = server.connect(v311("sp-clean")).await;
    assert!(!connack.session_present);
}

/// [MQTT-3.2.2-2] If the Server accepts a connection with CleanSession set to 0, the value
/// set in Session Present depends on whether the Server already has stored Session state
/// for the supplied client ID. If the Server has stored Session state, it MUST set Session
/// Present to 1 in the CONNACK packet.
#[tokio::test]
async fn mqtt_3_2_2_2_resumed_session_has_session_present_1() {
    let server = TestServer::start().await;
    server.connect(v311_persistent("sp-resume")).await.0.disconnect().await;
    let (_client, connack) = server.connect(v311_persistent("sp-resume")).await;
    assert!(connack.session_present);
}

/// [MQTT-3.2.2-3] If the Server does not have stored Session state, it MUST set Session
/// Present to 0 in the CONNACK packet.
#[tokio::test]
async fn mqtt_3_2_2_3_new_persistent_session_has_session_present_0() {
    let server = TestServer::start().await;
    let (_client, connack) = server.connect(v311_persistent("sp-new")).await;
    assert!(!connack.session_present);
}

/// [MQTT-3.2.2-4] If a server sends a CONNACK packet containing a non-zero return code it
/// MUST set Session Present to 0.
#[tokio::test]
async fn mqtt_3_2_2_4_refusal_has_session_present_0() {
    let server = TestServer::with(|b| b.max_connections = 1).await;
    server.connect(v311_persistent("sp-refused")).await.0.disconnect().await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let _occupant = server.v311("sp-occupant").await;
    // The stored session exists, but the server is full.
    let (mut client, connack) = Client::connect(server.addr, v311_persistent("sp-refused")).await;
    assert_eq!(connack.code, ReasonCode::SERVER_UNAVAILABLE);
    assert!(!connack.session_present);
    client.expect_closed().await;
}
