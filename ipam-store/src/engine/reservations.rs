//! IP reservations (Calico's IPReservation) listed, read, created and
//! deleted. Each is one object written on its own, as Calico's clientv3
//! writes it (clientv3/ipreservation.go): a create is the datastore's
//! create, so of two creates of one name exactly one wins and the other is
//! told the name exists; a delete names the revision it read. After a
//! write the cache is marked stale, so this engine's next assignment
//! plans with the reservations as they are now.

use super::retrying::Attempt;
use super::{Ipam, IpamError};
use crate::datastore::Datastore;
use crate::error::StoreError;
use crate::model::{Key, Kind, ListQuery, Reservation, Value, Versioned};

impl<S: Datastore + ?Sized> Ipam<S> {
    /// Every reservation, read fresh, by name.
    pub async fn reservations(&self) -> Result<Vec<Reservation>, IpamError> {
        let mut found: Vec<Reservation> = self
            .store
            .list(&ListQuery::All(Kind::Reservation))
            .await?
            .into_iter()
            .filter_map(|item| match item.value {
                Value::Reservation(r) => Some(r),
                _ => None,
            })
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// One reservation, read fresh; `None` when there is none of that name.
    pub async fn reservation(&self, name: &str) -> Result<Option<Reservation>, IpamError> {
        match self.store.get(&Key::Reservation(name.to_string())).await {
            Ok(Versioned {
                value: Value::Reservation(r),
                ..
            }) => Ok(Some(r)),
            Ok(other) => Err(not_a_reservation(name, &other.value)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a reservation; one of that name already there refuses it
    /// (`AlreadyExists`) and is left as it is.
    pub async fn create_reservation(&self, reservation: Reservation) -> Result<(), IpamError> {
        self.store.create(&Value::Reservation(reservation)).await?;
        self.cache().invalidate();
        Ok(())
    }

    /// Deletes a reservation (`NotFound` when there is none): addresses it
    /// kept out of use may be handed out from now on.
    pub async fn delete_reservation(&self, name: &str) -> Result<(), IpamError> {
        let key = Key::Reservation(name.to_string());
        let key = &key;
        self.retrying::<_, IpamError, _>("delete reservation", move |_| async move {
            // Gone before or during the delete: the caller asked for a
            // reservation that is not there, which no retry changes.
            let current = self.store.get(key).await?;
            match self.store.delete(key, &current.revision).await {
                Ok(()) => Ok(Attempt::Done(())),
                Err(e @ StoreError::NotFound { .. }) => Err(e.into()),
                // Changed since read (a label added): read again, delete.
                Err(e) => Ok(Attempt::Failed(e)),
            }
        })
        .await?;
        self.cache().invalidate();
        Ok(())
    }
}

fn not_a_reservation(name: &str, value: &Value) -> IpamError {
    StoreError::Invalid {
        what: Key::Reservation(name.to_string()).to_string(),
        message: format!("holds a {} instead", value.kind()),
    }
    .into()
}
