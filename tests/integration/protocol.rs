//! Framing and replies: docs/PROTOCOL.md "Frames and replies".

use std::io::Write;
use std::thread;

use crate::util::*;

#[test]
fn hello_gets_server_got_hello() {
    let server = TestServer::start();
    let mut c = connect(server.tcp());
    c.write_all(b"hello\t").unwrap();
    assert_eq!(read_n(&mut c, 17), b"server got:hello\t");
}

#[test]
fn lone_tab_is_an_empty_frame() {
    let server = TestServer::start();
    let mut c = connect(server.tcp());
    c.write_all(b"\t\t").unwrap();
    assert_eq!(read_n(&mut c, 24), b"server got:\tserver got:\t");
}

#[test]
fn any_byte_but_tab_is_frame_content() {
    let server = TestServer::start();
    let mut c = connect(server.tcp());
    let frame: Vec<u8> = (0u8..=255).filter(|&b| b != b'\t').collect();
    round_trip(&mut c, &frame);
    round_trip(&mut c, b"\x00\r\n\xff\xc3\x28 invalid utf-8");
}

#[test]
fn one_byte_per_segment_gives_the_same_replies() {
    let server = TestServer::start();
    let mut c = connect(server.tcp());
    let input = b"ab\t\tcde\tf\t";
    for b in input.iter() {
        c.write_all(&[*b]).unwrap();
        c.flush().unwrap();
    }
    let want = [reply(b"ab"), reply(b""), reply(b"cde"), reply(b"f")].concat();
    assert_eq!(read_n(&mut c, want.len()), want);
}

#[test]
fn ten_thousand_pipelined_frames_in_one_write_answered_in_order() {
    let server = TestServer::start();
    let mut c = connect(server.tcp());
    let frames: Vec<Vec<u8>> = (0..10_000)
        .map(|i| format!("frame-{i}").into_bytes())
        .collect();
    let input: Vec<u8> = frames
        .iter()
        .flat_map(|f| [f.as_slice(), b"\t"].concat())
        .collect();
    let want: Vec<u8> = frames.iter().flat_map(|f| reply(f)).collect();
    let mut writer = c.try_clone().unwrap();
    // Write from another thread: the replies fill our receive buffer while we write.
    let w = thread::spawn(move || writer.write_all(&input).unwrap());
    let got = read_n(&mut c, want.len());
    w.join().unwrap();
    assert!(got == want, "replies differ from the frames, in order");
}

#[test]
fn many_clients_are_served_independently() {
    let server = TestServer::start();
    let mut clients: Vec<_> = (0..50).map(|_| connect(server.tcp())).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(format!("c{i}\t").as_bytes()).unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let want = reply(format!("c{i}").as_bytes());
        assert_eq!(read_n(c, want.len()), want);
    }
    let stats = server.stop();
    assert_eq!(stats.accepted, 50);
    assert_eq!(stats.frames, 50);
}
