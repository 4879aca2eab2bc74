//! CRM operations on a Bitrix24 portal through its MCP server: binding the server's tools to the
//! lead operations (`discovery` makes a `binding`, reading names in `words` and schemas in `schema`, building
//! arguments in `args`, the operator's `toolmap`), reading their answers (`answer`), the typed
//! operations (`client`), and the live check that connect and test run (`check`).

pub mod answer;
pub mod args;
pub mod binding;
pub mod check;
pub mod client;
pub mod discovery;
pub mod ops;
pub mod schema;
pub mod toolmap;
pub mod words;

pub use binding::{Binding, BoundTool, PortalCaps, Profile, ToolKind};
pub use check::{CheckError, LiveCheck, live_check};
pub use client::{Crm, CrmError};
pub use ops::Operation;
pub use toolmap::{ToolMap, ToolMapError};
