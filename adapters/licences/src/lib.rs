//! The Yunnan government-services electronic licence library (云南省政务服务网 电子证照库):
//! SOAP 1.1 over HTTP, GBK or UTF-8, token authentication; a client and a simulator.

pub mod xml;
