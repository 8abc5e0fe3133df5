//! Command errors: a gRPC code, an ErrorInfo reason and field violations.

pub const CODE_INVALID_ARGUMENT: i32 = 3;
pub const CODE_NOT_FOUND: i32 = 5;
pub const CODE_ALREADY_EXISTS: i32 = 6;
pub const CODE_FAILED_PRECONDITION: i32 = 9;
pub const CODE_ABORTED: i32 = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    pub code: i32,
    pub reason: &'static str,
    pub message: String,
    pub violations: Vec<FieldViolation>,
}

impl CommandError {
    pub fn new(code: i32, reason: &'static str, message: String) -> Self {
        CommandError {
            code,
            reason,
            message,
            violations: Vec::new(),
        }
    }

    /// INVALID_ARGUMENT / INVALID_REQUEST; the message lists every violation.
    pub fn invalid(violations: Vec<FieldViolation>) -> Self {
        let listed: Vec<String> = violations
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect();
        CommandError {
            code: CODE_INVALID_ARGUMENT,
            reason: "INVALID_REQUEST",
            message: format!("invalid request: {}", listed.join("; ")),
            violations,
        }
    }

    pub fn order_not_found(order_id: &str) -> Self {
        Self::new(
            CODE_NOT_FOUND,
            "ORDER_NOT_FOUND",
            format!("order {order_id} not found"),
        )
    }

    pub fn location_not_found(location_id: &str) -> Self {
        Self::new(
            CODE_NOT_FOUND,
            "LOCATION_NOT_FOUND",
            format!("location {location_id} not found"),
        )
    }

    pub fn region_not_found(region: &str) -> Self {
        Self::new(
            CODE_FAILED_PRECONDITION,
            "REGION_NOT_FOUND",
            format!("region {region} not found"),
        )
    }
}

/// Collects field violations in the order the spec lists them.
#[derive(Debug, Default)]
pub struct Violations(pub Vec<FieldViolation>);

impl Violations {
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// Checks an identifier field. The check of a valid identifier (nearly
    /// every one) is inline; describing a violation is out of line.
    #[inline(always)]
    pub fn id(&mut self, field: &str, value: &str, max_len: usize) {
        if !super::ids::is_valid_id(value, max_len) {
            self.invalid_id(field, value, max_len);
        }
    }

    /// [`Violations::id`] for a value that failed the check.
    #[cold]
    #[inline(never)]
    fn invalid_id(&mut self, field: &str, value: &str, max_len: usize) {
        if let Some(d) = super::ids::invalid_id_violation(value, max_len) {
            self.add(field, d);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_result(self) -> Result<(), CommandError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(CommandError::invalid(self.0))
        }
    }
}
