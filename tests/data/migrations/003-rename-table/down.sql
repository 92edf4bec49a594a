ALTER TABLE bills RENAME TO invoices;
